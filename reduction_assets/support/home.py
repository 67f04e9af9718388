"""REDUCTION_HOME: the one folder that holds all state of an installation.

    $REDUCTION_HOME/
      landing/        raw files arrive here (the telescope's transfer writes here; we only read)
      raw/            the raw store: checksummed copies under canonical names
      products/       masters, reduced frames, stacks
      quarantine/     copies of refused files
      catalog.sqlite  the catalog (unless $REDUCTION_CATALOG_URL names another database)
      dagster/        the Dagster instance (DAGSTER_HOME): runs, events, schedules, sensor cursors
      state/          small state files of the command-line tools, and the home's lock
      scratch/        large temporary planes of running steps (members resampled for a stack)
      archive/        the archive's objects when it is kept locally (the embedded default)

An empty folder is a fresh installation: :meth:`Home.ensure` creates what is missing. Folders get
explicit modes whatever the umask: nothing under the home is ever world-writable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import filelock

HOME_ENV = "REDUCTION_HOME"
CATALOG_ENV = "REDUCTION_CATALOG_URL"
DEFAULT_HOME = "~/reduction_home"

# Owner writes, everyone reads: landing/ is written by the telescope's transfer as its own user.
DIRECTORY_MODE = 0o755
STATE_FILE_MODE = 0o644
LOCK_NAME = "home.lock"


class HomeBusy(RuntimeError):
    """Another process holds this home's lock."""


class HomeUnusable(RuntimeError):
    """The home cannot be written (a read-only or full file system, wrong permissions): one line that
    names the home, the cause and the path; nothing was done."""

    @classmethod
    def of(cls, home: Path, err: OSError) -> HomeUnusable:
        cause = err.strerror or type(err).__name__
        where = f": {err.filename}" if err.filename else ""
        return cls(f"the home {home} cannot be written ({cause}{where}); nothing was done")


def make_dirs(path: Path, mode: int = DIRECTORY_MODE) -> Path:
    """``mkdir -p`` with an explicit mode on every folder it creates (the umask cannot widen it)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # created by a concurrent writer: its mode is theirs to set
        os.chmod(folder, mode)
    return path


def write_atomic(path: Path, text: str, mode: int = STATE_FILE_MODE) -> None:
    """Replace ``path`` with ``text`` so that a crash or power loss leaves the old or the new content,
    never a torn file: write a temporary file beside it, flush it to disk, rename it over."""
    path = Path(path)
    make_dirs(path.parent)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".incoming-{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def read_text_or_none(path: Path) -> str | None:
    """The file's text, or None when it is missing or unreadable (not UTF-8, a directory...)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def products(self) -> Path:
        return self.root / "products"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def reference(self) -> Path:
        """Photometric reference catalogues (CSV: ra, dec in degrees and a magnitude column per filter)."""
        return self.root / "reference"

    def catalog_url(self) -> str:
        return os.environ.get(CATALOG_ENV) or f"sqlite:///{self.root / 'catalog.sqlite'}"

    def ensure(self) -> Home:
        """Create the folders and the Dagster instance config if missing (idempotent). Raises
        :class:`HomeUnusable` when they cannot be written."""
        try:
            self._create()
        except OSError as err:
            raise HomeUnusable.of(self.root, err) from err
        return self

    def _create(self) -> None:
        for folder in (
            self.root,
            self.landing,
            self.raw,
            self.products,
            self.quarantine,
            self.dagster,
            self.state,
            self.scratch,
            self.archive,
            self.reference,
        ):
            make_dirs(folder)
        instance_yaml = self.dagster / "dagster.yaml"
        if not instance_yaml.exists():
            source = resources.files("reduction_assets.support") / "defaults" / "dagster.yaml"
            write_atomic(instance_yaml, source.read_text())

    @contextlib.contextmanager
    def lock(self, *, wait_seconds: float = 0.0) -> Iterator[None]:
        """Hold this home's exclusive lock (an OS file lock: released when the holder dies, even by
        ``kill -9``). Raises :class:`HomeBusy` when another process keeps it longer than
        ``wait_seconds``, :class:`HomeUnusable` when the lock cannot be written."""
        try:
            make_dirs(self.state)
            lock = filelock.FileLock(str(self.state / LOCK_NAME), mode=STATE_FILE_MODE)
            lock.acquire(timeout=max(wait_seconds, 0.0))
        except filelock.Timeout as err:
            raise HomeBusy(f"another reduction-assets process is working on {self.root}") from err
        except OSError as err:
            raise HomeUnusable.of(self.root, err) from err
        try:
            yield
        finally:
            lock.release()


def resolve_home(path: str | os.PathLike | None = None) -> Home:
    """The home folder: ``path`` if given, else ``$REDUCTION_HOME``, else ``~/reduction_home``."""
    chosen = path or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Home(Path(chosen).expanduser().resolve())
