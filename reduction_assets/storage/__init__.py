"""Raw, quarantine and product stores behind one small interface (local directories; S3 next)."""

from reduction_assets.storage.base import (
    Integrity,
    MissingObject,
    ObjectStore,
    StagedObject,
    StoreError,
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
    "write_object",
]
