"""What the asset families share: reading masters that are verified first, and how a catalog row
of a master is recorded as provenance."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from dagster import RetryRequested

from reduction_assets.catalog import Calibration, Catalog
from reduction_assets.catalog.db import Session, is_transient
from reduction_assets.catalog.integrity import mark_calibration_stale
from reduction_assets.fits.reading import read_master
from reduction_assets.reduction.masters import Master
from reduction_assets.storage import Integrity, ObjectStore, StagedObject
from reduction_assets.support.provenance import UsedCalibration

T = TypeVar("T")


# Who answers for the assets in the UI: the observatory's data-reduction team.
OWNERS = ["team:data-reduction"]
# Memory-heavy steps (stacking masters, co-adding stacks) share this instance-wide pool, so that
# concurrent runs do not stack at the same time beyond what the pool's limit allows.
STACKING_POOL = "stacking"


# A step that met a transient database error is run again this many times, 5, 10 and 20 s later.
STEP_RETRIES = 3
STEP_RETRY_SECONDS = 5.0


def retried_when_transient(body: Callable[..., T]) -> Callable[..., T]:
    """Decorate an asset body (under ``@asset``) so that a transient database error (see
    :func:`reduction_assets.catalog.db.is_transient`) retries the step instead of failing the run.
    Safe because every step is idempotent: ingestion skips what is catalogued, products are recorded
    and published in one transaction and redone when their file and row disagree. Other errors fail
    the step at once: a rerun would meet them again."""

    @functools.wraps(body)
    def step(context, *args, **kwargs):
        try:
            return body(context, *args, **kwargs)
        except Exception as err:
            if not is_transient(err):
                raise
            wait = STEP_RETRY_SECONDS * 2**context.retry_number
            context.log.warning(
                "transient database error (%s); the step is run again in %.0f s", type(err).__name__, wait
            )
            raise RetryRequested(max_retries=STEP_RETRIES, seconds_to_wait=wait) from err

    return step


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
