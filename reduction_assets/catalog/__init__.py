"""The catalog: what has been ingested, produced, quarantined and archived."""

from reduction_assets.catalog.db import Catalog, CatalogUnavailable, default_catalog_url, safe_url
from reduction_assets.catalog.models import (
    Base,
    Calibration,
    InstrumentRow,
    Product,
    Quarantine,
    RawDuplicate,
    RawFrame,
    Stack,
    StackMember,
)

__all__ = [
    "Base",
    "Calibration",
    "Catalog",
    "CatalogUnavailable",
    "InstrumentRow",
    "Product",
    "Quarantine",
    "RawDuplicate",
    "RawFrame",
    "Stack",
    "StackMember",
    "default_catalog_url",
    "safe_url",
]
