"""Dagster resources: the installation's home folder, its catalog and its stores.

Every field is optional and resolved when a run uses it, never at import time: the definitions give
them through ``EnvVar`` (``REDUCTION_HOME``, ``REDUCTION_CATALOG_URL``), tests and `process` directly.
"""

import functools

from dagster import ConfigurableResource
from pydantic import Field

from reduction_assets.catalog import Catalog
from reduction_assets.home import Home, resolve_home
from reduction_assets.instruments import Registry, load_registry
from reduction_assets.storage import LocalStore, ObjectStore


@functools.lru_cache(maxsize=8)
def _catalog(url: str) -> Catalog:
    catalog = Catalog(url)
    catalog.create()
    return catalog


class ReductionHomeResource(ConfigurableResource):
    """Where this installation keeps its state, and the handles on it."""

    home: str | None = Field(
        default=None, description="REDUCTION_HOME folder; default $REDUCTION_HOME or ~/reduction_home"
    )
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default $REDUCTION_CATALOG_URL or SQLite in the home",
    )
    settle_seconds: float = Field(
        default=5.0, description="a landing file must be unmodified this long before it is ingested"
    )

    def layout(self) -> Home:
        return resolve_home(self.home).ensure()

    def registry(self) -> Registry:
        """The instrument registry: the same one the partitions were generated from."""
        return load_registry()

    def catalog(self) -> Catalog:
        catalog = _catalog(self.catalog_url or self.layout().catalog_url())
        catalog.sync_instruments(self.registry())
        return catalog

    def raw_store(self) -> ObjectStore:
        return LocalStore(self.layout().raw)

    def product_store(self) -> ObjectStore:
        return LocalStore(self.layout().products)

    def quarantine_store(self) -> ObjectStore:
        return LocalStore(self.layout().quarantine)
