"""Product, raw and archive stores behind one small interface (local directories now, S3 later)."""

from reduction_assets.storage.local import Integrity, LocalStore, StagedObject, StoreError

__all__ = ["Integrity", "LocalStore", "StagedObject", "StoreError"]
