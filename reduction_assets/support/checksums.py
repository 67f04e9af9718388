"""SHA-256 checksums: the one way the project identifies content (raw frames, products, copies)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


def sha256_of_stream(stream: BinaryIO) -> str:
    """SHA-256 (hex) of a binary stream from its current position, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of a local file."""
    with open(path, "rb") as handle:
        return sha256_of_stream(handle)
