"""The interface every store implements: raw, quarantine and product stores, and next the archive.

Objects are addressed by relative POSIX keys (``lcosim/2026-11-20/x.fits``) and never by local paths,
so that an object store (S3) can stand in for a directory without changes at the call sites. Readers
get a seekable binary stream; writers hand a function that writes one.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol


class StoreError(RuntimeError):
    """A store operation could not be completed without losing or corrupting data."""


class MissingObject(StoreError):
    """No object is stored under the key."""


def key_parts(key: str) -> tuple[str, ...]:
    """The parts of a store key, which must be a plain relative POSIX path (no ``..``, ``.``, empty
    parts, backslashes or leading ``/``): a key can never address anything outside its store."""
    pure = PurePosixPath(key)
    odd_parts = any(part in ("", ".", "..") for part in key.split("/"))
    if not key or "\\" in key or pure.is_absolute() or odd_parts:
        raise StoreError(f"store key {key!r} is not a plain relative path")
    return pure.parts


class Integrity(enum.Enum):
    """What a stored object is, compared with the checksum the catalog holds for it."""

    OK = "ok"
    MISSING = "missing"
    MISMATCH = "checksum_mismatch"


class StagedObject(Protocol):
    """A written, hashed object that is not visible under its key until it is published."""

    key: str
    checksum: str  # SHA-256 of the content

    def publish(self) -> None:
        """Make the object visible under its key atomically, replacing an older version."""

    def discard(self) -> None:
        """Forget the object if it was not published (idempotent)."""


class ObjectStore(Protocol):
    """A content-verified store of immutable objects."""

    def describe(self, key: str) -> str:
        """Where the object lives, for messages (a path or a URL, never a secret)."""

    def exists(self, key: str) -> bool: ...

    def check(self, key: str, checksum: str | None) -> Integrity:
        """Whether the object exists and hashes to ``checksum``."""

    def check_since(self, key: str, checksum: str | None, recorded_at: dt.datetime) -> Integrity:
        """:meth:`check`, cheaply where the store can tell that the object has not been written since
        it was recorded (``recorded_at``, naive UTC): what decides whether a product is up to date
        in every run. A full audit is `reduction-assets verify`."""

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A seekable binary stream of the object; raises :class:`MissingObject`."""

    def put_file(self, source: Path, key: str, checksum: str, *, replace: bool = False) -> None:
        """Store a copy of a local file, verified against ``checksum``; idempotent. Different
        content under the key is replaced only with ``replace`` (else :class:`StoreError`)."""

    def stage(self, key: str, write: Callable[[BinaryIO], None]) -> StagedObject:
        """Write an object through ``write(stream)`` and hash it, without publishing it yet."""

    def keys(self) -> Iterator[str]:
        """Every stored object's key."""

    def leftovers(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        """Temporary objects of interrupted writes, older than the given age."""

    def remove(self, key: str) -> None:
        """Delete an object (or a leftover); missing is not an error."""


def write_object(store: ObjectStore, key: str, write: Callable[[BinaryIO], None]) -> str:
    """Stage and publish an object at once; returns its SHA-256."""
    staged = store.stage(key, write)
    try:
        staged.publish()
    finally:
        staged.discard()
    return staged.checksum
