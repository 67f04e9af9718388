"""A content-verified store in a local directory."""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from reduction_assets.fits.validate import sha256_of
from reduction_assets.home import make_dirs

# Stored objects are immutable: read-only for everyone who may read them.
OBJECT_MODE = 0o444
TEMPORARY_PREFIX = ".incoming-"


class StoreError(RuntimeError):
    """A store operation could not be completed without losing or corrupting data."""


class Integrity(enum.Enum):
    """What a stored object is, compared with the checksum the catalog holds for it."""

    OK = "ok"
    MISSING = "missing"
    MISMATCH = "checksum_mismatch"


class LocalStore:
    """Files under ``root`` addressed by relative POSIX keys (``lcosim/2026-11-20/x.fits``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if pure.is_absolute() or any(part in ("", ".", "..") for part in pure.parts):
            raise StoreError(f"store key {key!r} is not a plain relative path")
        return self.root.joinpath(*pure.parts)

    def exists(self, key: str) -> bool:
        return self.path_for(key).exists()

    def check(self, key: str, checksum: str | None) -> Integrity:
        """Whether the object at ``key`` exists and hashes to ``checksum`` (SHA-256)."""
        path = self.path_for(key)
        try:
            actual = sha256_of(path)
        except FileNotFoundError:
            return Integrity.MISSING
        return Integrity.OK if actual == checksum else Integrity.MISMATCH

    def put_file(self, source: Path, key: str, checksum: str, *, replace: bool = False) -> Path:
        """Copy ``source`` to ``key`` atomically and verify the copy's SHA-256 equals ``checksum``.

        Idempotent: an existing object with the same checksum is kept. An object with other content
        is replaced when ``replace`` (a damaged copy being restored), else :class:`StoreError` is
        raised (raw data is never overwritten). The source is never touched, and the copy is never
        readable by more users than the source.
        """
        target = self.path_for(key)
        if target.exists():
            if sha256_of(target) == checksum:
                return target
            if not replace:
                raise StoreError(f"{key} already holds different content")
        mode = OBJECT_MODE & stat.S_IMODE(os.stat(source).st_mode)
        with self._temporary(target) as temp:
            with open(temp, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            copied = sha256_of(temp)
            if copied != checksum:
                raise StoreError(f"copy of {source.name} does not verify: {copied} != {checksum}")
            os.chmod(temp, mode)
            os.replace(temp, target)
        return target

    def stage_product(self, key: str, write: Callable[[Path], None]) -> StagedObject:
        """Write a product through ``write(path)`` to a temporary file beside ``key``, flush it to
        disk and hash it; :meth:`StagedObject.publish` moves it into place atomically.

        Splitting the write from the publication lets the caller record the checksum in the catalog
        in the same transaction that publishes the file (see ``catalog.publish``).
        """
        target = self.path_for(key)
        make_dirs(target.parent)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMPORARY_PREFIX)
        os.close(handle)
        temp = Path(temp_name)
        try:
            write(temp)
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
            checksum = sha256_of(temp)
            os.chmod(temp, OBJECT_MODE)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return StagedObject(key=key, checksum=checksum, temp=temp, target=target)

    def write_product(self, key: str, write: Callable[[Path], None]) -> str:
        """Write and publish a product at once; returns its SHA-256."""
        staged = self.stage_product(key, write)
        staged.publish()
        return staged.checksum

    def leftovers(self, older_than_seconds: float = 0.0) -> Iterator[Path]:
        """Temporary files of interrupted writes (``.incoming-*``) older than the given age."""
        if not self.root.is_dir():
            return
        limit = time.time() - older_than_seconds
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMPORARY_PREFIX):
                    path = Path(folder) / name
                    with contextlib.suppress(FileNotFoundError):
                        if path.lstat().st_mtime <= limit:
                            yield path

    def keys(self) -> Iterator[str]:
        """Every stored object's key (temporary files excluded)."""
        if not self.root.is_dir():
            return
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                if not name.startswith(TEMPORARY_PREFIX):
                    yield (Path(folder) / name).relative_to(self.root).as_posix()

    @contextlib.contextmanager
    def _temporary(self, target: Path) -> Iterator[Path]:
        make_dirs(target.parent)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMPORARY_PREFIX)
        os.close(handle)
        temp = Path(temp_name)
        try:
            yield temp
        finally:
            temp.unlink(missing_ok=True)


class StagedObject:
    """A product written and hashed beside its final place, not yet visible under its key."""

    def __init__(self, *, key: str, checksum: str, temp: Path, target: Path):
        self.key = key
        self.checksum = checksum
        self._temp = temp
        self._target = target

    def publish(self) -> None:
        """Move the product into place atomically, replacing an older version."""
        os.replace(self._temp, self._target)

    def discard(self) -> None:
        self._temp.unlink(missing_ok=True)
