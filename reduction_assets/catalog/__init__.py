"""The catalog: what has been ingested, produced, quarantined and archived."""

from reduction_assets.catalog.db import Catalog, default_catalog_url
from reduction_assets.catalog.models import (
    Base,
    Calibration,
    InstrumentRow,
    Product,
    Quarantine,
    RawDuplicate,
    RawFrame,
)

__all__ = [
    "Base",
    "Calibration",
    "Catalog",
    "InstrumentRow",
    "Product",
    "Quarantine",
    "RawDuplicate",
    "RawFrame",
    "default_catalog_url",
]
