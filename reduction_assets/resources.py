"""Dagster resources: the installation's home folder, its catalog and its stores.

Fields default to None and are resolved when a run uses them ($REDUCTION_HOME, $REDUCTION_CATALOG_URL),
never at import time.
"""


import functools

from dagster import ConfigurableResource
from pydantic import Field

from reduction_assets.catalog import Catalog
from reduction_assets.home import Home, resolve_home
from reduction_assets.instruments import Registry, load_registry
from reduction_assets.storage import LocalStore


@functools.lru_cache(maxsize=8)
def _catalog(url: str) -> Catalog:
    catalog = Catalog(url)
    catalog.create()
    return catalog


class ReductionHomeResource(ConfigurableResource):
    """Where this installation keeps its state, and the handles on it."""

    home: str | None = Field(
        default=None, description="REDUCTION_HOME folder; default $REDUCTION_HOME or ~/reduction_home")
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default $REDUCTION_CATALOG_URL or SQLite in the home")
    instruments: str | None = Field(
        default=None, description="instrument registry YAML; default $REDUCTION_INSTRUMENTS or packaged")
    settle_seconds: float = Field(
        default=5.0, description="a landing file must be unmodified this long before it is ingested")

    def layout(self) -> Home:
        return resolve_home(self.home).ensure()

    def registry(self) -> Registry:
        return load_registry(self.instruments)

    def catalog(self) -> Catalog:
        catalog = _catalog(self.catalog_url or self.layout().catalog_url())
        catalog.sync_instruments(self.registry())
        return catalog

    def raw_store(self) -> LocalStore:
        return LocalStore(self.layout().raw)

    def product_store(self) -> LocalStore:
        return LocalStore(self.layout().products)

    def quarantine_store(self) -> LocalStore:
        return LocalStore(self.layout().quarantine)
