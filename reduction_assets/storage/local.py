"""A content-verified store in a local directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable

from reduction_assets.fits.validate import sha256_of


class StoreError(RuntimeError):
    """A store operation could not be completed without losing or corrupting data."""


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

    def put_file(self, source: Path, key: str, checksum: str, *, replace: bool = False) -> Path:
        """Copy ``source`` to ``key`` atomically and verify the copy's SHA-256 equals ``checksum``.

        Idempotent: an existing object with the same checksum is kept. An object with other content
        is replaced when ``replace`` (products that are rebuilt), else :class:`StoreError` is raised
        (raw data is never overwritten). The source is never touched.
        """
        target = self.path_for(key)
        if target.exists():
            if sha256_of(target) == checksum:
                return target
            if not replace:
                raise StoreError(f"{key} already holds different content")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            copied = sha256_of(temp)
            if copied != checksum:
                raise StoreError(f"copy of {source.name} does not verify: {copied} != {checksum}")
            os.chmod(temp, 0o444)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return target

    def write_product(self, key: str, write: Callable[[Path], None]) -> str:
        """Write a product at ``key`` through ``write(path)`` and return its SHA-256.

        ``write`` receives a temporary path beside the target (it may overwrite it); the file is
        flushed to disk, hashed once and moved into place atomically, replacing an older version, so
        readers never see a partial product.
        """
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        os.close(handle)
        temp = Path(temp_name)
        try:
            write(temp)
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
            checksum = sha256_of(temp)
            os.chmod(temp, 0o444)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return checksum
