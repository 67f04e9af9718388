"""What the asset families share: owners, the stacking pool, and retries of transient errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue, RetryRequested

from reduction_assets.catalog.db import is_transient
from reduction_assets.tasks.common import CheckVerdict

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


def check_result(verdict: CheckVerdict, asset_key: str) -> AssetCheckResult:
    """A check's verdict as Dagster reports it (a warning: the frames are recorded either way)."""
    return AssetCheckResult(
        check_name=verdict.name,
        asset_key=AssetKey(asset_key),
        passed=not verdict.failures,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(verdict.failures[:10]) if verdict.failures else verdict.passed_description,
        metadata={"failing": MetadataValue.int(len(verdict.failures))},
    )
