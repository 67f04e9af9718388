"""`reduction-assets process`: do what the daemon would do with what is in landing/ now, then return.

Evaluates the landing sensor, executes the runs it requests against the Dagster instance in
REDUCTION_HOME (they appear in the UI like daemon-launched runs), and repeats until a tick requests
nothing and no file is waiting to settle. For batch and cron users.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from reduction_assets.home import Home
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.sensors import (
    evaluate_landing,
    evaluate_recalibration,
    forget_files,
    request_files,
)

log = logging.getLogger(__name__)
CURSOR_FILE = "landing_sensor.cursor"
RUN_KEY_TAG = "dagster/run_key"
# With the sensor's name beside the run key, the daemon's sensor (`make dev`) recognises the runs of
# `process` as its own and does not launch them again, and the other way round.
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class ProcessOutcome:
    runs: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [run for run in self.runs if not run["success"]]


def instance_for(home: Home) -> DagsterInstance:
    """The Dagster instance stored in ``home`` (DAGSTER_HOME is set for anything that forks)."""
    home.ensure()
    os.environ["DAGSTER_HOME"] = str(home.dagster)
    return DagsterInstance.from_config(str(home.dagster))


def _already_succeeded(instance: DagsterInstance, run_key: str) -> bool:
    runs = instance.get_runs(
        filters=RunsFilter(tags={RUN_KEY_TAG: run_key}, statuses=[DagsterRunStatus.SUCCESS]), limit=1)
    return bool(runs)


def process_landing(
    home: Home,
    *,
    settle_seconds: float = 5.0,
    max_wait_seconds: float = 600.0,
    log_level: str = "WARNING",
    echo=print,
) -> ProcessOutcome:
    """Run the landing sensor and its requested runs until idle. See the module docstring."""
    from reduction_assets.definitions import build_definitions

    instance = instance_for(home)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=settle_seconds)
    job = build_definitions(resource).resolve_implicit_global_asset_job_def()
    loggers = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    cursor_path = home.state / CURSOR_FILE
    cursor = cursor_path.read_text() if cursor_path.exists() else None
    outcome = ProcessOutcome()
    deadline = time.monotonic() + max_wait_seconds
    try:
        while True:
            tick, result = evaluate_landing(resource, cursor)
            next_cursor = result.cursor
            requests = [("landing_sensor", r) for r in result.run_requests or []]
            if not requests and not tick.waiting:
                # Landing is quiet: frames reduced with an earlier night's calibrations may now
                # have nearer ones (the calibration sensor's work).
                requests = [("calibration_sensor", r)
                            for r in evaluate_recalibration(resource).run_requests or []]
            executed = 0
            for sensor_name, request in requests:
                label = request.partition_key or ",".join(k.to_user_string() for k in request.asset_selection)
                if _already_succeeded(instance, request.run_key):
                    outcome.skipped.append(label)
                    echo(f"skip {label}: run key {request.run_key} already succeeded")
                    continue
                tags = {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_name}
                executed += 1
                run = job.execute_in_process(
                    run_config={**request.run_config, **loggers}, instance=instance,
                    partition_key=request.partition_key, asset_selection=request.asset_selection,
                    tags=tags, raise_on_error=False)
                outcome.runs.append({"run_id": run.run_id, "partition": label, "success": run.success})
                echo(f"{'ok  ' if run.success else 'FAIL'} {label} run {run.run_id}")
                if not run.success:
                    next_cursor = forget_files(next_cursor, request_files(request))
            # Only now is the work done: a crash above re-requests the same files next time.
            cursor = next_cursor
            cursor_path.write_text(cursor or "")
            if outcome.failed:
                break  # the failed files are left for the next invocation, not retried in a loop
            if executed:
                continue
            if not tick.waiting:
                break
            if time.monotonic() > deadline:
                echo(f"gave up waiting for {len(tick.waiting)} files to settle: "
                     + ", ".join(tick.waiting[:5]))
                break
            time.sleep(min(max(settle_seconds / 4, 0.2), 2.0))
    finally:
        instance.dispose()
    return outcome
