"""A content-verified store in a local directory (the embedded default)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from reduction_assets.storage.base import Integrity, MissingObject, StoreError, key_parts
from reduction_assets.support.checksums import sha256_of, sha256_of_stream
from reduction_assets.support.home import make_dirs

# Stored objects are immutable: read-only for everyone who may read them.
OBJECT_MODE = 0o444
TEMPORARY_PREFIX = ".incoming-"
_CHUNK = 1 << 20


class LocalStore:
    """Objects as files under ``root``; writes go to a temporary file beside the target and are
    renamed into place, so readers never see a partial object."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key_parts(key))

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def check(self, key: str, checksum: str | None) -> Integrity:
        try:
            actual = sha256_of(self._path(key))
        except FileNotFoundError:
            return Integrity.MISSING
        return Integrity.OK if actual == checksum else Integrity.MISMATCH

    def check_since(self, key: str, checksum: str | None, recorded_at: dt.datetime) -> Integrity:
        """OK without reading when the file is no newer than its catalog record (objects are written
        before they are recorded, and never in place); else a full :meth:`check`. Damage that keeps
        the modification time (bit rot) is found by `reduction-assets verify`."""
        try:
            modified = self._path(key).stat().st_mtime
        except FileNotFoundError:
            return Integrity.MISSING
        if modified <= recorded_at.replace(tzinfo=dt.UTC).timestamp():
            return Integrity.OK
        return self.check(key, checksum)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError as err:
            raise MissingObject(f"{key} is not in the store at {self.root}") from err
        with handle:
            yield handle

    def put_file(self, source: Path, key: str, checksum: str, *, replace: bool = False) -> None:
        """Copy ``source`` to ``key`` atomically and verify the copy (see the protocol). The copy is
        never readable by more users than the source."""
        target = self._path(key)
        if target.exists():
            if sha256_of(target) == checksum:
                return
            if not replace:
                raise StoreError(f"{key} already holds different content")
        mode = OBJECT_MODE & stat.S_IMODE(os.stat(source).st_mode)
        temp = self._temporary(target)
        try:
            with open(temp, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            copied = sha256_of(temp)
            if copied != checksum:
                raise StoreError(f"copy of {source.name} does not verify: {copied} != {checksum}")
            os.chmod(temp, mode)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def stage(self, key: str, write: Callable[[BinaryIO], None]) -> LocalStagedObject:
        """Write through ``write(stream)`` to a temporary file beside ``key``, flush it to disk and
        hash it; :meth:`LocalStagedObject.publish` renames it into place."""
        target = self._path(key)
        temp = self._temporary(target)
        try:
            with open(temp, "w+b") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
                out.seek(0)
                checksum = sha256_of_stream(out)
            os.chmod(temp, OBJECT_MODE)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return LocalStagedObject(key=key, checksum=checksum, temp=temp, target=target)

    def keys(self) -> Iterator[str]:
        for path in self._walk():
            if not path.name.startswith(TEMPORARY_PREFIX):
                yield path.relative_to(self.root).as_posix()

    def leftovers(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        limit = time.time() - older_than_seconds
        for path in self._walk():
            if path.name.startswith(TEMPORARY_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if path.lstat().st_mtime <= limit:
                        yield path.relative_to(self.root).as_posix()

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _walk(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                yield Path(folder) / name

    def _temporary(self, target: Path) -> Path:
        make_dirs(target.parent)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=TEMPORARY_PREFIX)
        os.close(handle)
        return Path(name)


class LocalStagedObject:
    """A product written and hashed beside its final place, not yet visible under its key."""

    def __init__(self, *, key: str, checksum: str, temp: Path, target: Path):
        self.key = key
        self.checksum = checksum
        self._temp = temp
        self._target = target

    def publish(self) -> None:
        os.replace(self._temp, self._target)

    def discard(self) -> None:
        self._temp.unlink(missing_ok=True)
