"""What the task families share: where a step reads and records, masters verified before use, and a
product recorded and published in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reduction_assets.catalog import Calibration, Catalog
from reduction_assets.catalog.db import Session
from reduction_assets.catalog.integrity import mark_calibration_stale
from reduction_assets.fits.reading import read_master
from reduction_assets.reduction.masters import Master
from reduction_assets.storage import Integrity, ObjectStore, StagedObject
from reduction_assets.support.provenance import UsedCalibration

T = TypeVar("T")

# A frame may use calibrations of its own night and of this many nights before it (or, reprocessing
# an archive, either side): the reach of the calibration window in the graph and in the catalog query.
CALIBRATION_WINDOW_NIGHTS = 7


@dataclass(frozen=True)
class Stores:
    """Where a step reads its inputs and records its products: the catalog, the raw frames' store
    and the products' store."""

    catalog: Catalog
    raw: ObjectStore
    products: ObjectStore


class DamagedMaster(Exception):
    """A master's file is missing or does not match its checksum; it was marked for rebuilding."""


class VerifiedMasters:
    """Masters read once per run, each checked against its catalog checksum before first use. A
    damaged one is marked stale (with the products made from it) and raises :class:`DamagedMaster`."""

    def __init__(self, catalog: Catalog, products: ObjectStore):
        self.catalog = catalog
        self.products = products
        self._cache: dict[int, Master] = {}

    def __call__(self, calibration: Calibration) -> Master:
        if calibration.id not in self._cache:
            state = self.products.check(calibration.path, calibration.checksum)
            if state is not Integrity.OK:
                with self.catalog.session() as session:
                    mark_calibration_stale(session, calibration.id)
                raise DamagedMaster(
                    f"the master {calibration.type} {calibration.id} ({calibration.path}) is "
                    f"{state.value}: it is marked for rebuilding, with what was made from it"
                )
            with self.products.open(calibration.path) as stream:
                self._cache[calibration.id] = read_master(stream)
        return self._cache[calibration.id]


def record_and_publish(catalog: Catalog, staged: StagedObject, record: Callable[[Session], T]) -> T:
    """Record a product and publish its file in one transaction, so that the row and the file change
    together (a crash between the rename and the commit leaves a checksum mismatch, which the next
    run's up-to-date check sees and redoes). Returns what ``record(session)`` returns."""
    try:
        with catalog.session() as session:
            row = record(session)
            staged.publish()
        return row
    finally:
        staged.discard()


def used(kind: str, calibration: Calibration) -> UsedCalibration:
    return UsedCalibration(
        kind=kind,
        id=calibration.id,
        key=calibration.path,
        night=calibration.night,
        checksum=calibration.checksum,
    )


@dataclass(frozen=True)
class CheckVerdict:
    """One check's failures (empty: it passed) and what it says when it passes."""

    name: str
    failures: list[str]
    passed_description: str
