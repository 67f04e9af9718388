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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import DagsterInstance

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.db import without_credentials
from reduction_assets.catalog.reports import not_reducible_frames
from reduction_assets.fits.headers import shown
from reduction_assets.orchestration.partitions import split_key
from reduction_assets.orchestration.resources import (
    LANDING_STORE_ENV,
    ReductionHomeResource,
    landing_resource,
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
from reduction_assets.support.progress import progress

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
            os._exit(128 + self.signum)


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
    home.ensure()
    try:
        with home.lock(wait_seconds=lock_wait_seconds):
            check_catalog(home)
            instance = instance_for(home)
            try:
                with _SignalWatch(instance, echo) as watch:
                    outcome.reaped = reap_dead_process_runs(instance, home, holding_lock=True)
                    for run in outcome.reaped:
                        echo(
                            f"marked run {run.run_id} of a dead `process` (pid {run.pid}) failed; "
                            f"freed {run.freed_slots} pool slots"
                        )
                    partitions = _process_until_idle(
                        home,
                        instance,
                        watch,
                        outcome,
                        settle_seconds=settle_seconds,
                        max_wait_seconds=max_wait_seconds,
                        log_level=log_level,
                        echo=echo,
                    )
                    succeeded = {run["partition"] for run in outcome.runs if run["success"]}
                    instruments = sorted({i for i, n in partitions if partition_label(i, n) in succeeded})
                    _redraw_trends(home, instance, instruments, outcome, log_level=log_level, echo=echo)
                    catalog = Catalog(home.catalog_url())
                    try:
                        with catalog.session() as session:
                            outcome.not_reducible = not_reducible_frames(session, partitions)
                    finally:
                        catalog.dispose()
            finally:
                instance.dispose()
    except HomeBusy as busy:
        outcome.busy = True
        echo(f"{busy}; this invocation does nothing")
    return outcome


def partition_label(instrument: str, night: dt.date) -> str:
    return f"{instrument}|{night.isoformat()}"


def _redraw_trends(
    home: Home, instance: DagsterInstance, instruments: list[str], outcome: ProcessOutcome, *, log_level, echo
) -> None:
    """Redraw the quality trends of the instruments whose nights were measured (the quality trends
    sensor's work, done here for installations without the daemon)."""
    from reduction_assets.orchestration.definitions import build_definitions
    from reduction_assets.orchestration.jobs import UPDATE_QUALITY_TRENDS

    if not instruments:
        return
    definitions = build_definitions(ReductionHomeResource(home=str(home.root)))
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


def _process_until_idle(
    home: Home,
    instance: DagsterInstance,
    watch: _SignalWatch,
    outcome: ProcessOutcome,
    *,
    settle_seconds: float,
    max_wait_seconds: float,
    log_level: str,
    echo,
) -> list[tuple[str, dt.date]]:
    """Evaluate and execute until idle; returns the partitions whose runs were executed."""
    from reduction_assets.orchestration.definitions import build_definitions

    resource = ReductionHomeResource(home=str(home.root), settle_seconds=settle_seconds)
    landing_source = landing_resource(
        os.environ.get(LANDING_STORE_ENV, "directory"), lambda name, secret: os.environ.get(name)
    )
    definitions = build_definitions(resource)
    loggers = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    legacy_cursor_path = home.state / LEGACY_CURSOR_FILE
    legacy_cursor = read_text_or_none(legacy_cursor_path)
    deadline = time.monotonic() + max_wait_seconds
    tags = process_run_tags(home)
    partitions: list[tuple[str, dt.date]] = []
    while True:
        mirrored = mirror_landing_source(landing_source, resource, log)
        busy = partitions_in_flight(instance)
        tick, result = evaluate_landing(
            resource,
            requested_by=PROCESS,
            outcome_of=lambda run_key: run_key_outcome(instance, run_key),
            busy=busy,
            retry_delay=no_retry_delay,
            legacy_cursor=legacy_cursor,
        )
        if legacy_cursor is not None or legacy_cursor_path.exists():
            legacy_cursor_path.unlink(missing_ok=True)  # what it held is in the catalog now
            legacy_cursor = None
        outcome.last_tick = tick
        requests = [("landing_sensor", r) for r in result.run_requests or []]
        if not requests and not tick.waiting and not tick.deferred:
            # Landing is quiet: frames reduced with an earlier night's calibrations may now
            # have nearer ones (the calibration sensor's work).
            requests = [
                ("calibration_sensor", r) for r in evaluate_recalibration(resource, busy).run_requests or []
            ]
        executed = 0
        for sensor_name, request in progress(requests, "runs", "run"):
            label = request.partition_key or request.job_name
            if run_key_succeeded(instance, request.run_key):
                outcome.skipped.append(label)
                echo(f"skip {label}: run key {request.run_key} already succeeded")
                continue
            if run_key_in_flight(instance, request.run_key):
                outcome.skipped.append(label)
                echo(f"skip {label}: a run with key {request.run_key} is in flight (the daemon's)")
                continue
            run_id = str(uuid.uuid4())
            executed += 1
            watch.run_id = run_id
            try:
                run = definitions.resolve_job_def(request.job_name).execute_in_process(
                    run_config={**request.run_config, **loggers},
                    instance=instance,
                    partition_key=request.partition_key,
                    tags={**request.tags, **tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_name},
                    run_id=run_id,
                    raise_on_error=False,
                )
            finally:
                watch.run_id = None
            if sensor_name == "landing_sensor":
                settle_landing_run(resource, request.run_key, run.success, run.run_id)
            outcome.runs.append({"run_id": run.run_id, "partition": label, "success": run.success})
            if request.partition_key:
                partitions.append(split_key(request.partition_key))
            echo(f"{'ok  ' if run.success else 'FAIL'} {label} run {run.run_id}")
            watch.check()
        if outcome.failed:
            return partitions  # the failed files are asked for again by the next invocation
        if executed:
            continue
        in_bucket = (mirrored.waiting + mirrored.deferred) if mirrored else []
        if not tick.waiting and not tick.deferred and not in_bucket:
            return partitions
        if time.monotonic() > deadline:
            names = tick.waiting + list(tick.deferred) + in_bucket
            outcome.gave_up_waiting = names
            echo(
                f"gave up waiting for {len(names)} files to settle or for runs in flight: "
                + ", ".join(shown(name) for name in names[:5])
            )
            return partitions
        time.sleep(min(max(settle_seconds / 4, 0.2), 2.0))
