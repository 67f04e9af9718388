"""Raw, quarantine, product and archive stores behind one small interface: local directories, and
S3-compatible buckets for the archive."""

from reduction_assets.storage.base import (
    Integrity,
    MissingObject,
    ObjectStore,
    StagedObject,
    StoreError,
    key_parts,
    write_object,
)
from reduction_assets.storage.local import LocalStore

__all__ = [
    "Integrity",
    "LocalStore",
    "MissingObject",
    "ObjectStore",
    "StagedObject",
    "StoreError",
    "key_parts",
    "write_object",
]
