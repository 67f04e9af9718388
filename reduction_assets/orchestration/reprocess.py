"""`reduction-assets reprocess`: plan a range of nights again, for the daemon (a partition backfill
launched through the webserver, shown on the UI's backfill page) or in this process (``--local``).

A plan covers, per instrument, the nights from the first to the last that hold data in the catalog
(raw frames, or landing files routed to them); an instrument without data in the range is left out.
Products whose fingerprints still match are not redone: reprocessing redoes what a new software
version, new settings or new calibrations change.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.partitions import PARTITIONS_PER_BACKFILL_RUN, night_in_range


class PlanRefused(ValueError):
    """The request cannot be planned (unknown names, an empty or impossible range)."""


@dataclass(frozen=True)
class NightSpan:
    instrument: str
    first: dt.date
    last: dt.date
    nights_with_data: int

    @property
    def nights(self) -> int:
        return (self.last - self.first).days + 1


@dataclass
class ReprocessPlan:
    start: dt.date
    end: dt.date
    assets: tuple[str, ...]
    spans: list[NightSpan] = field(default_factory=list)

    @property
    def daemon_runs(self) -> int:
        """Runs of the daemon's backfill: one per instrument and up to 31 nights."""
        return sum(math.ceil(span.nights / PARTITIONS_PER_BACKFILL_RUN) for span in self.spans)

    def describe(self) -> str:
        spans = "; ".join(
            f"{s.instrument} {s.first}..{s.last} ({s.nights_with_data} of {s.nights} nights hold data)"
            for s in self.spans
        )
        return f"{', '.join(self.assets)} for {spans}"

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "assets": list(self.assets),
            "spans": [
                {
                    "instrument": s.instrument,
                    "first": s.first.isoformat(),
                    "last": s.last.isoformat(),
                    "nights_with_data": s.nights_with_data,
                }
                for s in self.spans
            ],
            "daemon_runs": self.daemon_runs,
        }


def parse_assets(text: str | None) -> tuple[str, ...]:
    """The partitioned assets named in ``a,b,...`` in graph order (all of them for None)."""
    if not text:
        return NIGHT_ASSETS
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in NIGHT_ASSETS]
    if unknown or not names:
        raise PlanRefused(
            f"unknown asset {', '.join(map(repr, unknown)) or repr(text)}; valid: {', '.join(NIGHT_ASSETS)}"
        )
    return tuple(name for name in NIGHT_ASSETS if name in names)


def check_instruments(given: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    unknown = [name for name in given or [] if name not in known]
    if unknown:
        raise PlanRefused(f"unknown instrument {unknown[0]!r}; valid: {', '.join(known)}")
    return list(given) if given else list(known)


def plan_reprocess(
    start: dt.date,
    end: dt.date,
    instruments: Sequence[str],
    assets: tuple[str, ...],
    nights_with_data: Callable[[str, dt.date, dt.date], list[dt.date]],
) -> ReprocessPlan:
    """The spans to redo; raises :class:`PlanRefused` for an impossible range or one without data."""
    if end < start:
        raise PlanRefused(f"END {end} is before START {start}")
    for night in (start, end):
        if not night_in_range(night):
            raise PlanRefused(f"night {night} has no partition (before the first night, or not begun yet)")
    plan = ReprocessPlan(start, end, assets)
    for instrument in instruments:
        nights = sorted(nights_with_data(instrument, start, end))
        if nights:
            plan.spans.append(NightSpan(instrument, nights[0], nights[-1], len(nights)))
    if not plan.spans:
        raise PlanRefused(
            f"no data from {start} to {end} for {', '.join(instruments)}: "
            "nothing to reprocess, nothing launched"
        )
    return plan


REPROCESS_JOB = "reprocess_nights"


def run_locally(home, plan: ReprocessPlan, *, echo=print, log_level: str = "WARNING") -> list[dict]:
    """Run the plan in this process against the home's Dagster instance, partition by partition,
    night by night (earlier nights' masters first); the runs show in the UI. Holds the home's lock,
    as `process` does, so the two never work on a home at once. Returns one dict per run."""
    from dagster import AssetSelection, define_asset_job

    from reduction_assets.orchestration.process import check_catalog, instance_for

    job = define_asset_job(
        REPROCESS_JOB,
        selection=AssetSelection.assets(*plan.assets),
        description="Partitions reprocessed by `reduction-assets reprocess --local`.",
    )
    partitions = _partitions_in_order(plan)
    with home.lock(wait_seconds=0.0):
        check_catalog(home)
        instance = instance_for(home)
        try:
            return _execute_partitions(home, job, instance, partitions, echo=echo, log_level=log_level)
        finally:
            instance.dispose()


def _partitions_in_order(plan: ReprocessPlan) -> list[tuple[dt.date, str]]:
    """(night, instrument) of every partition of the plan, night by night."""
    return sorted(
        (span.first + dt.timedelta(days=offset), span.instrument)
        for span in plan.spans
        for offset in range(span.nights)
    )


def _execute_partitions(
    home, job, instance, partitions: list[tuple[dt.date, str]], *, echo, log_level: str
) -> list[dict]:
    """Execute the job in this process on each partition in turn; one dict per run."""
    from reduction_assets.orchestration.definitions import definitions_for
    from reduction_assets.orchestration.partitions import partition_key
    from reduction_assets.orchestration.resources import ReductionHomeResource
    from reduction_assets.orchestration.runs import process_run_tags
    from reduction_assets.support.progress import progress

    definitions = definitions_for(ReductionHomeResource(home=str(home.root)), extra_jobs=[job])
    resolved = definitions.resolve_job_def(REPROCESS_JOB)
    tags = {**process_run_tags(home), "reduction_assets/trigger": "reprocess"}
    loggers = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    runs: list[dict] = []
    for night, instrument in progress(partitions, "reprocessing", "partition"):
        key = partition_key(instrument, night)
        result = resolved.execute_in_process(
            run_config=loggers, instance=instance, partition_key=key, tags=tags, raise_on_error=False
        )
        runs.append({"run_id": result.run_id, "partition": str(key), "success": result.success})
        echo(f"{'ok  ' if result.success else 'FAIL'} {key} run {result.run_id}")
    return runs
