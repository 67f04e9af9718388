"""The landing sensor: new files in landing/ become process_night runs, one per affected partition.

What was asked for is remembered in the catalog (``landing_files``, one row per file version in
landing/), not in the sensor's cursor: the cursor is a few counts, the same size for 100 files or
100,000. Each evaluation first settles the rows whose runs ended (a failed run's files are asked for
again after a delay, up to :data:`MAX_ATTEMPTS` runs per file version; touching a file asks again).
"""

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from dagster import (
    DagsterInstance,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.integrity import stale_partitions
from reduction_assets.catalog.landing import (
    DONE,
    FAILED,
    REQUESTED,
    KnownRoute,
    LandingRecord,
    LandingRequest,
    forget_landing_files,
    forget_routes,
    import_requested,
    known_routes,
    landing_records,
    record_requests,
    remember_routes,
    settle_run_key,
)
from reduction_assets.catalog.models import utcnow
from reduction_assets.catalog.operations import pending_rework
from reduction_assets.catalog.products import frames_to_recalibrate
from reduction_assets.fits.headers import shown
from reduction_assets.fits.validate import FileState
from reduction_assets.orchestration.jobs import (
    PROCESS_NIGHT,
    QUARANTINE_REJECTS,
    REBUILD_MASTERS,
    REDUCE_FRAMES,
    process_night,
    quarantine_rejects,
    rebuild_masters,
    reduce_frames,
)
from reduction_assets.orchestration.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    night_in_range,
    night_not_yet_open,
    partition_key,
)
from reduction_assets.orchestration.quality_sensors import QUALITY_SENSORS
from reduction_assets.orchestration.resources import LandingSourceResource, ReductionHomeResource
from reduction_assets.orchestration.runs import (
    RUN_FAILED,
    RUN_SUCCEEDED,
    RunOutcome,
    partitions_in_flight,
    reap_dead_process_runs,
    run_key_outcome,
)
from reduction_assets.storage.base import StoreError
from reduction_assets.support.keys import NightPartition
from reduction_assets.tasks import schedule
from reduction_assets.tasks.landing import LandingScan, Route, decode_name, encode_name, scan_landing
from reduction_assets.tasks.landing_plan import (
    MAX_ATTEMPTS,
    LandingBatch,
    LandingTick,
    PartitionRules,
    RecordingRouter,
    batch_rows,
    landing_batches,
    naive_utc,
    plan_tick,
)
from reduction_assets.tasks.landing_s3 import MIRROR_FOLDER, MirrorReport, mirror_arrivals
from reduction_assets.tasks.recalibration import Recalibration, plan_recalibrations

CURSOR_VERSION = 2
LANDING_SENSOR = "landing_sensor"
LANDING_INTERVAL_SECONDS = 10


def sensor_retry_delay(attempts: int) -> dt.timedelta:
    """How long the daemon's sensor waits before asking again for files whose run failed (2, 8 and
    32 minutes after the first, second and third failure): long enough for a database or a disk to
    come back, short enough to finish the night."""
    return dt.timedelta(minutes=2 * 4 ** max(attempts - 1, 0))


def no_retry_delay(attempts: int) -> dt.timedelta:
    """`process` asks again at its next invocation: cron is its delay."""
    return dt.timedelta(0)


def _partition_text(instrument: str, night: dt.date | str) -> str:
    """The text of a night x instrument partition key (``instrument|night``)."""
    return NightPartition(
        instrument, night if isinstance(night, dt.date) else dt.date.fromisoformat(night)
    ).key


def plan_landing_tick(
    files: dict[str, FileState],
    known: Mapping[str, LandingRecord],
    *,
    settle_seconds: float,
    route: Callable[[str], Route],
    now: float | None = None,
    busy: Set[str] = frozenset(),
    unlaunched: Set[str] = frozenset(),
) -> LandingTick:
    """Decide which landing files to request, from the file listing and what was asked for before.

    ``known`` holds the remembered file versions by encoded name. A file version is requested once
    (a new size or mtime is a new version), again when the run key it was requested under is in
    ``unlaunched`` (no run has it), again when its run failed and its retry time has come, and never
    more than :data:`MAX_ATTEMPTS` times. A file is requested only after it has been
    unmodified for ``settle_seconds``. Files of a partition in ``busy`` (a run is working on it) and
    of a night whose partition is not open yet are asked for again later.
    """
    rules = PartitionRules(key=_partition_text, not_yet_open=night_not_yet_open, in_range=night_in_range)
    return plan_tick(
        files,
        known,
        settle_seconds=settle_seconds,
        route=route,
        now=time.time() if now is None else now,
        rules=rules,
        busy=busy,
        unlaunched=unlaunched,
    )


@dataclass(frozen=True)
class Settlement:
    """A run key whose requested files change state."""

    run_key: str
    state: str  # DONE or FAILED
    run_id: str | None
    retry_at: dt.datetime | None = None


def settle_requests(
    known: Mapping[str, LandingRecord],
    outcome_of: Callable[[str], RunOutcome | None],
    *,
    now: float,
    retry_delay: Callable[[int], dt.timedelta],
) -> tuple[list[Settlement], set[str]]:
    """The requested file versions whose runs have ended, and the run keys that have no run at all.

    Files are done when a run of their key succeeded, and failed (to be asked for again at
    ``retry_delay(attempts)``) when it failed. A request without a run (an evaluation whose requests
    were never launched: "Test sensor" in the UI, a daemon stopped in between) is simply made again,
    under the same run key, so Dagster launches it at most once.
    """
    pending: dict[str, LandingRecord] = {}
    for record in known.values():
        if record.state == REQUESTED:
            pending.setdefault(record.run_key, record)
    settlements, unlaunched = [], set()
    moment = naive_utc(now)
    for run_key, record in sorted(pending.items()):
        outcome = outcome_of(run_key)
        if outcome is None:
            unlaunched.add(run_key)
        elif outcome.status == RUN_SUCCEEDED:
            settlements.append(Settlement(run_key, DONE, outcome.run_id))
        elif outcome.status == RUN_FAILED:
            settlements.append(
                Settlement(run_key, FAILED, outcome.run_id, moment + retry_delay(record.attempts))
            )
    return settlements, unlaunched


def request_files(request: RunRequest) -> list[str]:
    """The landing files a run request asks to ingest."""
    ops = (request.run_config or {}).get("ops", {})
    return [decode_name(name) for op in ops.values() for name in op.get("config", {}).get("files", [])]


def landing_requests(
    tick: LandingTick, files: dict[str, FileState]
) -> tuple[list[RunRequest], list[LandingRequest]]:
    """The run requests of a tick, and the catalog rows that remember them."""
    requests: list[RunRequest] = []
    remembered: list[LandingRequest] = []
    for batch in landing_batches(tick, files, key_of=_partition_text):
        requests.append(_landing_run_request(batch))
        remembered.extend(batch_rows(batch, files, tick.attempts))
    return requests, remembered


def _landing_run_request(batch: LandingBatch) -> RunRequest:
    """A process_night run for a partition's arrivals, or a quarantine_rejects run for the rejects."""
    files = [encode_name(name) for name in batch.names]
    if batch.partition is None:
        return RunRequest(
            run_key=batch.run_key,
            job_name=QUARANTINE_REJECTS,
            run_config={"ops": {"landing_rejects": {"config": {"files": files}}}},
            tags={"reduction_assets/trigger": LANDING_SENSOR},
        )
    return RunRequest(
        run_key=batch.run_key,
        partition_key=partition_key(batch.instrument, batch.night),
        # The partition's masters and reduced frames follow in the same run, in graph order.
        job_name=PROCESS_NIGHT,
        run_config={"ops": {"raw_frames": {"config": {"files": files}}}},
        tags={
            "reduction_assets/trigger": LANDING_SENSOR,
            "reduction_assets/files": str(len(batch.names)),
            "reduction_assets/attempt": str(batch.attempt),
        },
    )


def _some(names) -> str:
    names = list(names)
    return ", ".join(shown(n) for n in names[:5]) + (" …" if len(names) > 5 else "")


def describe_idle_tick(tick: LandingTick) -> str:
    """One line for an evaluation that requested nothing: what is waiting, and why."""
    reason = f"no new files in landing/ ({tick.already} already requested"
    if tick.waiting:
        reason += f"; {len(tick.waiting)} waiting to settle: {_some(tick.waiting)}"
    if tick.not_open:
        nights = sorted(set(tick.not_open.values()))
        reason += f"; {len(tick.not_open)} of night {', '.join(nights)} whose partition opens later"
    if tick.deferred:
        partitions = sorted(set(tick.deferred.values()))
        reason += f"; {len(tick.deferred)} wait for the run in flight on {', '.join(partitions)}"
    if tick.retry_later:
        first = min(tick.retry_later.values()).strftime("%H:%M UTC")
        reason += f"; {len(tick.retry_later)} asked for again from {first} after a failed run"
    if tick.gave_up:
        reason += (
            f"; {len(tick.gave_up)} not asked for again after {MAX_ATTEMPTS} failed runs "
            f"(touch or replace them to retry): {_some(tick.gave_up)}"
        )
    if tick.ignored:
        reason += f"; {len(tick.ignored)} ignored (hidden, temporary or not regular files: "
        reason += f"{_some(e.name for e in tick.ignored)})"
    return reason + ")"


def legacy_requested(cursor: str | None) -> dict[str, tuple[int, int]]:
    """The files a cursor of release 0.2 (``{"v": 1, "requested": {name: "size:mtime_ns"}}``) had
    asked for, by encoded name; empty for anything else (a torn file, a current cursor)."""
    try:
        previous = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    if not isinstance(previous, dict) or previous.get("v") != 1:
        return {}
    requested = previous.get("requested")
    if not isinstance(requested, dict):
        return {}
    stamps = {}
    for name, stamp in requested.items():
        try:
            size, mtime_ns = (int(part) for part in str(stamp).split(":"))
        except ValueError:
            continue
        stamps[encode_name(str(name))] = (size, mtime_ns)
    return stamps


def tick_cursor(tick: LandingTick, requested: int) -> str:
    """The sensor's cursor: counts for the sensor page (the memory itself is in the catalog)."""
    return json.dumps(
        {
            "v": CURSOR_VERSION,
            "requested": requested,
            "already": tick.already,
            "waiting": len(tick.waiting) + len(tick.deferred) + len(tick.not_open),
            "retry_later": len(tick.retry_later),
            "gave_up": len(tick.gave_up),
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class KnownFiles:
    """The catalog's landing rows once ended runs are settled, and the run keys that no run has."""

    records: Mapping[str, LandingRecord]
    unlaunched: Set[str] = frozenset()


def evaluate_landing(
    home: ReductionHomeResource,
    *,
    requested_by: str = LANDING_SENSOR,
    outcome_of: Callable[[str], RunOutcome | None] | None = None,
    busy: Set[str] = frozenset(),
    retry_delay: Callable[[int], dt.timedelta] = sensor_retry_delay,
    legacy_cursor: str | None = None,
    now: float | None = None,
) -> tuple[LandingTick, SensorResult]:
    """One evaluation of the landing sensor's logic (shared by the sensor and `process`).

    Settles the requests whose runs ended (``outcome_of`` looks a run key up in the instance; without
    it nothing is settled and nothing is asked for twice), forgets files gone from landing/, plans,
    and remembers the new requests.
    """
    now = time.time() if now is None else now
    landing = home.layout().landing
    registry = home.registry()
    scan = scan_landing(landing)
    catalog = home.catalog()
    known = _forget_departed(catalog, scan, legacy_cursor)
    memory = _settle_ended_runs(catalog, known, outcome_of, now=now, retry_delay=retry_delay)
    router = RecordingRouter(landing, registry, scan.files)
    tick = plan_landing_tick(
        scan.files,
        memory.records,
        settle_seconds=home.settle_seconds,
        busy=busy,
        unlaunched=memory.unlaunched,
        now=now,
        route=router,
    )
    tick.ignored = scan.ignored
    run_requests, remembered = landing_requests(tick, scan.files)
    _remember_requests(catalog, remembered, router.routed, requested_by)
    tick.cursor = tick_cursor(tick, len(remembered))
    return tick, _landing_result(tick, run_requests)


def _landing_result(tick: LandingTick, run_requests: list[RunRequest]) -> SensorResult:
    """The tick's run requests, or why it has none."""
    if run_requests:
        return SensorResult(run_requests=run_requests, cursor=tick.cursor)
    return SensorResult(skip_reason=SkipReason(describe_idle_tick(tick)), cursor=tick.cursor)


def _remember_requests(
    catalog: Catalog, remembered: list[LandingRequest], routed: Mapping[str, KnownRoute], requested_by: str
) -> None:
    """Remember the files asked for, and where the files routed on the way belong."""
    if remembered or routed:
        with catalog.session() as session:
            record_requests(session, remembered, requested_by)
            remember_routes(session, routed)


def _forget_departed(
    catalog: Catalog, scan: LandingScan, legacy_cursor: str | None
) -> dict[str, LandingRecord]:
    """The remembered file versions, once a release 0.2 cursor is imported and files gone from landing/
    are forgotten."""
    with catalog.session() as session:
        legacy = legacy_requested(legacy_cursor)
        if legacy:
            import_requested(session, legacy, run_key="imported-from-cursor-v1")
        known = landing_records(session)
        present = {encode_name(name) for name in scan.files}
        gone = [name for name in known if name not in present]
        if gone:
            forget_landing_files(session, gone)
        forget_routes(session, set(known_routes(session)) - present)
    return known


def _settle_ended_runs(
    catalog: Catalog,
    known: dict[str, LandingRecord],
    outcome_of: Callable[[str], RunOutcome | None] | None,
    *,
    now: float,
    retry_delay: Callable[[int], dt.timedelta],
) -> KnownFiles:
    """Record the ends of the runs of requested files (nothing without ``outcome_of``)."""
    if outcome_of is None:
        return KnownFiles(known, set())
    settlements, unlaunched = settle_requests(known, outcome_of, now=now, retry_delay=retry_delay)
    if settlements:
        with catalog.session() as session:
            for settlement in settlements:
                settle_run_key(
                    session, settlement.run_key, settlement.state, settlement.run_id, settlement.retry_at
                )
            known = landing_records(session)
    return KnownFiles(known, unlaunched)


def settle_landing_run(home: ReductionHomeResource, run_key: str, succeeded: bool, run_id: str) -> None:
    """Record the end of a run that `process` executed itself: its files are done, or failed and
    asked for again by the next invocation."""
    with home.catalog().session() as session:
        if succeeded:
            settle_run_key(session, run_key, DONE, run_id)
        else:
            settle_run_key(session, run_key, FAILED, run_id, utcnow())


def _instance(context: SensorEvaluationContext) -> DagsterInstance | None:
    """The sensor's instance (None only in tests that evaluate the sensor without one)."""
    try:
        return context.instance
    except DagsterInvariantViolationError:
        return None


def mirror_landing_source(
    source: LandingSourceResource | None, home: ReductionHomeResource, log
) -> MirrorReport | None:
    """Copy settled arrivals of an S3 landing source into landing/s3/ (None: landing/ alone). A
    bucket that cannot be listed is logged; landing/ is processed as it is."""
    store = source.store() if source is not None else None
    if store is None:
        return None
    try:
        report = mirror_arrivals(store, home.layout().landing, settle_seconds=home.settle_seconds)
    except StoreError as err:
        log.warning("the S3 landing source cannot be read: %s; landing/ is processed as it is", err)
        return None
    if report.copied or report.waiting or report.refused or report.deferred:
        log.info(
            "S3 landing source: %d copied into landing/%s, %d waiting to settle, %d for the next tick, "
            "%d refused%s",
            len(report.copied),
            MIRROR_FOLDER,
            len(report.waiting),
            len(report.deferred),
            len(report.refused),
            "".join(f"; {key}: {why}" for key, why in report.refused[:5]),
        )
    return report


@sensor(
    name=LANDING_SENSOR,
    jobs=[process_night, quarantine_rejects],
    # A third of Dagster's default, as file watchers poll: a science frame waits about 10 s for the
    # tick that sees it settled (an evaluation is a directory listing and a few catalog queries;
    # skipped ticks are kept 7 days).
    minimum_interval_seconds=LANDING_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches landing/ (and an S3 prefix, when one is configured) and requests a "
    "process_night run for each night and instrument with new, settled files (and a "
    "quarantine_rejects run for files that belong to none); asks again, "
    "after a delay, for the files of runs that failed.",
)
def landing_sensor(
    context: SensorEvaluationContext, home: ReductionHomeResource, landing_source: LandingSourceResource
) -> SensorResult:
    mirror_landing_source(landing_source, home, context.log)
    busy: Set[str] = frozenset()
    outcome_of = None
    instance = _instance(context)
    if instance is not None:
        for run in reap_dead_process_runs(instance, home.layout(), holding_lock=False):
            context.log.warning(
                "marked run %s of a dead `process` (pid %s) failed; freed %d slots",
                run.run_id,
                run.pid,
                run.freed_slots,
            )
        busy = partitions_in_flight(instance)

        def outcome_of(run_key: str) -> RunOutcome | None:
            return run_key_outcome(instance, run_key)

    tick, result = evaluate_landing(home, outcome_of=outcome_of, busy=busy, legacy_cursor=context.cursor)
    if tick.waiting or tick.deferred or tick.not_open or tick.retry_later or tick.gave_up:
        context.log.info(
            "%d files waiting to settle, %d for a run in flight, %d for their night's partition, "
            "%d for a retry, %d given up after %d failed runs",
            len(tick.waiting),
            len(tick.deferred),
            len(tick.not_open),
            len(tick.retry_later),
            len(tick.gave_up),
            MAX_ATTEMPTS,
        )
    return result


def evaluate_recalibration(home: ReductionHomeResource, busy: Set[str] = frozenset()) -> SensorResult:
    """Requests runs for partitions whose frames now have nearer calibrations (reduced_frames), that
    hold masters or products marked stale (files found damaged, operator actions), and that an
    operator sent back through the graph (``rework``): from the masters on when a master must be
    remade, else from the reduced frames on. Partitions in ``busy`` wait: a run is working on them."""
    registry = home.registry()
    with home.catalog().session() as session:
        nearer = frames_to_recalibrate(session, registry, CALIBRATION_WINDOW_NIGHTS)
        damaged = {(p.instrument, p.night): p for p in stale_partitions(session)}
        now = schedule.utc_now().replace(tzinfo=None)
        rework = {(p.instrument, p.night): p for p in pending_rework(session, now)}
    requests = [_recalibration_request(plan) for plan in plan_recalibrations(nearer, damaged, rework, busy)]
    if requests:
        return SensorResult(run_requests=requests)
    return SensorResult(
        skip_reason=SkipReason(
            "no reduced frame has a nearer calibration than the one it was reduced with, nothing is "
            "marked for rebuilding and no operator action waits"
        )
    )


def _recalibration_request(plan: Recalibration) -> RunRequest:
    """The run that redoes a partition from its masters, or from its reduced frames."""
    return RunRequest(
        run_key=plan.run_key,
        partition_key=partition_key(plan.instrument, plan.night),
        job_name=REBUILD_MASTERS if plan.masters else REDUCE_FRAMES,
        tags={
            "reduction_assets/trigger": "operator" if plan.by_operator else "calibration_sensor",
            "reduction_assets/frames": str(plan.frames),
            "reduction_assets/rebuild": plan.rebuild,
        },
    )


@sensor(
    name="calibration_sensor",
    jobs=[rebuild_masters, reduce_frames],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Re-reduces frames that used an earlier night's calibrations (or none) once a nearer "
    "one exists, and rebuilds masters and products marked stale by `reduction-assets verify`.",
)
def calibration_sensor(context: SensorEvaluationContext, home: ReductionHomeResource) -> SensorResult:
    instance = _instance(context)
    return evaluate_recalibration(home, partitions_in_flight(instance) if instance else frozenset())


# Every sensor of the code location (the definitions and `reduction-assets status` list these).
SENSORS = (landing_sensor, calibration_sensor, *QUALITY_SENSORS)


def sensors_running_by_default() -> dict[str, bool]:
    """Each sensor's name and whether it runs on a new instance (before anyone starts or stops it)."""
    return {s.name: s.default_status == DefaultSensorStatus.RUNNING for s in SENSORS}
