"""`reduction-assets process`: do what the daemon would do with what is in landing/ now, then return.

Evaluates the landing sensor, executes the runs it requests against the Dagster instance in
REDUCTION_HOME (they appear in the UI like daemon-launched runs), and repeats until a tick requests
nothing and no file is waiting to settle. For batch and cron users.

Only one `process` works on a home at a time (an OS file lock, released even by ``kill -9``). At
start it marks the runs of earlier, dead invocations failed and frees their pool slots. SIGTERM and
SIGINT stop it promptly: a run in progress is interrupted (or, when Dagster cannot interrupt it,
marked failed) and nothing after it starts.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, RunRequest

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.reports import not_reducible_frames
from reduction_assets.fits.headers import shown
from reduction_assets.orchestration.partitions import split_key
from reduction_assets.orchestration.resources import (
    LandingSourceResource,
    ReductionHomeResource,
    resources_from_environment,
)
from reduction_assets.orchestration.runs import (
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    ReapedRun,
    free_slots,
    partitions_in_flight,
    process_run_tags,
    reap_dead_process_runs,
    run_key_in_flight,
    run_key_outcome,
    run_key_succeeded,
)
from reduction_assets.orchestration.sensors import (
    LandingTick,
    evaluate_landing,
    evaluate_recalibration,
    mirror_landing_source,
    no_retry_delay,
    settle_landing_run,
)
from reduction_assets.support.home import Home, HomeBusy, read_text_or_none
from reduction_assets.support.keys import NightPartition
from reduction_assets.support.progress import progress
from reduction_assets.support.secrets import without_credentials

log = logging.getLogger(__name__)
PROCESS = "process"
# Where release 0.2 kept the landing sensor's memory for `process`; imported into the catalog once.
LEGACY_CURSOR_FILE = "landing_sensor.cursor"
# Seconds Dagster gets to end a run itself after SIGTERM/SIGINT before `process` ends it.
INTERRUPT_GRACE_SECONDS = 5.0


class InstanceUnavailable(RuntimeError):
    """The Dagster instance of the home cannot be opened (one line naming the cause)."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


@dataclass
class ProcessOutcome:
    runs: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reaped: list[ReapedRun] = field(default_factory=list)
    busy: bool = False  # another process holds the home's lock: nothing was done
    last_tick: LandingTick | None = None
    not_reducible: list[dict] = field(default_factory=list)  # frames of the partitions run, with reasons
    gave_up_waiting: list[str] = field(default_factory=list)  # files still unsettled at the deadline
    trends: list[dict] = field(default_factory=list)  # the quality trends redrawn after the runs

    @property
    def failed(self) -> list[dict]:
        return [run for run in self.runs + self.trends if not run["success"]]


def instance_for(home: Home) -> DagsterInstance:
    """The Dagster instance stored in ``home`` (DAGSTER_HOME is set for anything that forks)."""
    home.ensure()
    os.environ["DAGSTER_HOME"] = str(home.dagster)
    retries = _ConnectionRetries()
    root = logging.getLogger()
    root.addFilter(retries)
    try:
        return DagsterInstance.from_config(str(home.dagster))
    except Exception as err:
        cause = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        cause = f"{type(err).__name__}: {cause.strip()}"
        if retries.last:  # dagster-postgres says only "too many retries": name the reason it retried
            cause = retries.last
        raise InstanceUnavailable(
            f"cannot open the Dagster instance in {home.dagster}: {without_credentials(cause)}"
        ) from err
    finally:
        root.removeFilter(retries)


class _ConnectionRetries(logging.Filter):
    """Keeps dagster-postgres's "Retrying failed database connection" warnings (one per attempt, on
    the root logger) off the terminal, remembering the last one's reason for the error."""

    PREFIX = "Retrying failed database connection: "

    def __init__(self):
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        reason = message[len(self.PREFIX) :].split("\n", 1)[0]
        self.last = reason.replace("(psycopg2.OperationalError) ", "").strip()
        return False


def check_catalog(home: Home, catalog_url: str | None = None) -> None:
    """Raise :class:`reduction_assets.catalog.CatalogUnavailable` before any run starts."""
    catalog = Catalog(catalog_url or home.catalog_url())
    try:
        catalog.check()
    finally:
        catalog.dispose()


class _SignalWatch:
    """Turns SIGTERM/SIGINT into :class:`Interrupted`, also while Dagster executes a run.

    Dagster replaces the handlers during execution and acts on them only inside step code: a run
    waiting for a pool slot, or in a numba kernel, would ignore them. The signal's number also goes
    to a wake-up socket that a thread watches; if the run has not ended ``grace`` seconds later, the
    thread marks it failed, frees its slots and ends the process.
    """

    def __init__(
        self, instance: DagsterInstance, echo: Callable[[str], None], grace: float = INTERRUPT_GRACE_SECONDS
    ):
        self.instance = instance
        self.echo = echo
        self.grace = grace
        self.signum: int | None = None
        self.run_id: str | None = None
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(True)
        self._writer.setblocking(False)
        self._previous: dict[int, object] = {}
        self._old_wakeup = -1
        self._thread = threading.Thread(target=self._watch, name="process-signal-watch", daemon=True)

    def __enter__(self) -> _SignalWatch:
        if threading.current_thread() is not threading.main_thread():
            return self  # tests may call process_landing from a worker thread: no signals there
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._previous:
            signal.set_wakeup_fd(self._old_wakeup)
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._writer.close()  # the watching thread reads end-of-stream and returns
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._reader.close()

    def _on_signal(self, signum, _frame) -> None:
        self.signum = signum
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal arrived while Dagster had the handlers."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(16)
            except OSError:
                return
            if not data:
                return
            self.signum = self.signum or data[-1]
            run_id = self.run_id
            if run_id is None:
                continue  # the main thread's handler raises Interrupted itself
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and self.run_id == run_id:
                time.sleep(0.1)
            if self.run_id != run_id:
                continue  # Dagster ended the run; the main thread stops after it
            run = self.instance.get_run_by_id(run_id)
            name = signal.Signals(self.signum).name
            if run is not None and not run.is_finished:
                self.instance.report_run_failed(run, f"`reduction-assets process` stopped by {name}")
                free_slots(self.instance, run_id)
            self.echo(f"stopped by {name} during run {run_id} (marked failed)")
            # os._exit skips the interpreter's flush: to a pipe (cron, a supervisor's log) the line
            # above would be lost.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + self.signum)


@dataclass(frozen=True)
class _Pacing:
    """How `process` waits and logs: seconds a file must rest, seconds to wait for files in all,
    and the log level of its runs."""

    settle_seconds: float
    max_wait_seconds: float
    log_level: str


def process_landing(
    home: Home,
    *,
    settle_seconds: float = 5.0,
    max_wait_seconds: float = 600.0,
    lock_wait_seconds: float = 0.0,
    log_level: str = "WARNING",
    echo=print,
) -> ProcessOutcome:
    """Run the landing sensor and its requested runs until idle. See the module docstring.

    Raises :class:`CatalogUnavailable` or :class:`InstanceUnavailable` before any run starts when
    the databases cannot be used, and :class:`Interrupted` on SIGTERM/SIGINT.
    """
    outcome = ProcessOutcome()
    pacing = _Pacing(settle_seconds, max_wait_seconds, log_level)
    home.ensure()
    try:
        with home.lock(wait_seconds=lock_wait_seconds):
            check_catalog(home)
            instance = instance_for(home)
            try:
                with _SignalWatch(instance, echo) as watch:
                    _process_locked(home, instance, watch, outcome, pacing, echo)
            finally:
                instance.dispose()
    except HomeBusy as busy:
        outcome.busy = True
        echo(f"{busy}; this invocation does nothing")
    return outcome


def _process_locked(
    home: Home, instance: DagsterInstance, watch: _SignalWatch, outcome: ProcessOutcome, pacing: _Pacing, echo
) -> None:
    """The work of `process` while it holds the home's lock: reap the runs of dead invocations, run
    until idle, redraw the trends of the instruments measured and list the frames not reducible."""
    outcome.reaped = reap_dead_process_runs(instance, home, holding_lock=True)
    for run in outcome.reaped:
        echo(
            f"marked run {run.run_id} of a dead `process` (pid {run.pid}) failed; "
            f"freed {run.freed_slots} pool slots"
        )
    partitions = _process_until_idle(home, instance, watch, outcome, pacing, echo)
    succeeded = {run["partition"] for run in outcome.runs if run["success"]}
    instruments = sorted({i for i, n in partitions if NightPartition(i, n).key in succeeded})
    _redraw_trends(home, instance, instruments, outcome, log_level=pacing.log_level, echo=echo)
    outcome.not_reducible = _not_reducible(home, partitions)


def _not_reducible(home: Home, partitions: list[tuple[str, dt.date]]) -> list[dict]:
    """The frames of ``partitions`` that could not be reduced, with the reasons."""
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            return not_reducible_frames(session, partitions)
    finally:
        catalog.dispose()


def _redraw_trends(
    home: Home, instance: DagsterInstance, instruments: list[str], outcome: ProcessOutcome, *, log_level, echo
) -> None:
    """Redraw the quality trends of the instruments whose nights were measured (the quality trends
    sensor's work, done here for installations without the daemon)."""
    from reduction_assets.orchestration.definitions import definitions_for
    from reduction_assets.orchestration.jobs import UPDATE_QUALITY_TRENDS

    if not instruments:
        return
    definitions = definitions_for(ReductionHomeResource(home=str(home.root)))
    job = definitions.resolve_job_def(UPDATE_QUALITY_TRENDS)
    for instrument in instruments:
        run = job.execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            instance=instance,
            partition_key=instrument,
            tags={**process_run_tags(home), "reduction_assets/trigger": "process"},
            raise_on_error=False,
        )
        outcome.trends.append({"run_id": run.run_id, "partition": instrument, "success": run.success})
        echo(f"{'ok  ' if run.success else 'FAIL'} trends {instrument} run {run.run_id}")


@dataclass(frozen=True)
class _Runner:
    """What each round of `process` works with: the home, its Dagster instance and definitions, the
    landing source, the signal watch, the outcome it fills in, and the config and tags of its runs."""

    home: Home
    instance: DagsterInstance
    watch: _SignalWatch
    outcome: ProcessOutcome
    resource: ReductionHomeResource
    landing_source: LandingSourceResource
    definitions: Definitions
    run_config: dict
    tags: dict[str, str]
    echo: Callable[[str], None]

    @property
    def legacy_cursor_path(self) -> Path:
        """The landing sensor's memory as release 0.2 kept it."""
        return self.home.state / LEGACY_CURSOR_FILE


@dataclass(frozen=True)
class _Evaluation:
    """One evaluation: the landing sensor's tick, the names still arriving in the landing bucket,
    and the runs requested, each with the sensor that asked for it."""

    tick: LandingTick
    in_bucket: list[str]
    requests: list[tuple[str, RunRequest]]

    @property
    def waiting(self) -> list[str]:
        """Files not settled yet, deferred behind runs in flight, or still in the bucket."""
        return self.tick.waiting + list(self.tick.deferred) + self.in_bucket


def _process_until_idle(
    home: Home, instance: DagsterInstance, watch: _SignalWatch, outcome: ProcessOutcome, pacing: _Pacing, echo
) -> list[tuple[str, dt.date]]:
    """Evaluate and execute until idle; returns the partitions whose runs were executed."""
    runner = _runner_for(home, instance, watch, outcome, pacing, echo)
    legacy_cursor = read_text_or_none(runner.legacy_cursor_path)
    deadline = time.monotonic() + pacing.max_wait_seconds
    partitions: list[tuple[str, dt.date]] = []
    while True:
        evaluation = _evaluate(runner, legacy_cursor)
        legacy_cursor = None  # the first tick imports it into the catalog
        executed = _execute_requests(runner, evaluation.requests, partitions)
        if outcome.failed:
            return partitions  # the failed files are asked for again by the next invocation
        if executed:
            continue
        if not evaluation.waiting:
            return partitions
        if time.monotonic() > deadline:
            _give_up_waiting(runner, evaluation.waiting)
            return partitions
        time.sleep(min(max(pacing.settle_seconds / 4, 0.2), 2.0))


def _runner_for(
    home: Home, instance: DagsterInstance, watch: _SignalWatch, outcome: ProcessOutcome, pacing: _Pacing, echo
) -> _Runner:
    """The resources, definitions, run config and tags that every round of `process` uses."""
    from reduction_assets.orchestration.definitions import definitions_for

    resource = ReductionHomeResource(home=str(home.root), settle_seconds=pacing.settle_seconds)
    # The sensor logic runs here, outside a run: the landing source with plain values.
    landing_source = resources_from_environment(
        resource.home, lambda name, secret: os.environ.get(name)
    ).landing
    definitions = definitions_for(resource)
    loggers = {"loggers": {"console": {"config": {"log_level": pacing.log_level}}}}
    return _Runner(
        home=home,
        instance=instance,
        watch=watch,
        outcome=outcome,
        resource=resource,
        landing_source=landing_source,
        definitions=definitions,
        run_config=loggers,
        tags=process_run_tags(home),
        echo=echo,
    )


def _evaluate(runner: _Runner, legacy_cursor: str | None) -> _Evaluation:
    """Mirror the landing bucket and evaluate the landing sensor; when landing is quiet, the
    calibration sensor."""
    mirrored = mirror_landing_source(runner.landing_source, runner.resource, log)
    busy = partitions_in_flight(runner.instance)
    tick, result = evaluate_landing(
        runner.resource,
        requested_by=PROCESS,
        outcome_of=lambda run_key: run_key_outcome(runner.instance, run_key),
        busy=busy,
        retry_delay=no_retry_delay,
        legacy_cursor=legacy_cursor,
    )
    if legacy_cursor is not None or runner.legacy_cursor_path.exists():
        runner.legacy_cursor_path.unlink(missing_ok=True)  # what it held is in the catalog now
    runner.outcome.last_tick = tick
    requests = [("landing_sensor", r) for r in result.run_requests or []]
    if not requests and not tick.waiting and not tick.deferred:
        # Landing is quiet: frames reduced with an earlier night's calibrations may now
        # have nearer ones (the calibration sensor's work).
        requests = [
            ("calibration_sensor", r)
            for r in evaluate_recalibration(runner.resource, busy).run_requests or []
        ]
    in_bucket = (mirrored.waiting + mirrored.deferred) if mirrored else []
    return _Evaluation(tick, in_bucket, requests)


def _execute_requests(
    runner: _Runner, requests: list[tuple[str, RunRequest]], partitions: list[tuple[str, dt.date]]
) -> int:
    """Execute the requested runs in order, adding their partitions to ``partitions``; returns how
    many were executed (a run whose key succeeded or is in flight is skipped)."""
    executed = 0
    for sensor_name, request in progress(requests, "runs", "run"):
        label = request.partition_key or request.job_name
        skip = _skip_reason(runner.instance, request.run_key)
        if skip is not None:
            runner.outcome.skipped.append(label)
            runner.echo(f"skip {label}: {skip}")
            continue
        executed += 1
        run = _execute_run(runner, sensor_name, request)
        if sensor_name == "landing_sensor":
            settle_landing_run(runner.resource, request.run_key, run.success, run.run_id)
        runner.outcome.runs.append({"run_id": run.run_id, "partition": label, "success": run.success})
        if request.partition_key:
            partitions.append(split_key(request.partition_key))
        runner.echo(f"{'ok  ' if run.success else 'FAIL'} {label} run {run.run_id}")
        runner.watch.check()
    return executed


def _skip_reason(instance: DagsterInstance, run_key: str) -> str | None:
    """Why a requested run is not executed (a run with its key succeeded or is in flight), or None."""
    if run_key_succeeded(instance, run_key):
        return f"run key {run_key} already succeeded"
    if run_key_in_flight(instance, run_key):
        return f"a run with key {run_key} is in flight (the daemon's)"
    return None


def _execute_run(runner: _Runner, sensor_name: str, request: RunRequest) -> ExecuteInProcessResult:
    """Execute one requested run in this process, where the signal watch can end it."""
    run_id = str(uuid.uuid4())
    runner.watch.run_id = run_id
    try:
        return runner.definitions.resolve_job_def(request.job_name).execute_in_process(
            run_config={**request.run_config, **runner.run_config},
            instance=runner.instance,
            partition_key=request.partition_key,
            tags={**request.tags, **runner.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_name},
            run_id=run_id,
            raise_on_error=False,
        )
    finally:
        runner.watch.run_id = None


def _give_up_waiting(runner: _Runner, names: list[str]) -> None:
    """Record and report the files still unsettled (or runs in flight) at the deadline."""
    runner.outcome.gave_up_waiting = names
    runner.echo(
        f"gave up waiting for {len(names)} files to settle or for runs in flight: "
        + ", ".join(shown(name) for name in names[:5])
    )
