"""The landing sensor: new files in landing/ become process_night runs, one per affected partition.

What was asked for is remembered in the catalog (``landing_files``, one row per file version in
landing/), not in the sensor's cursor: the cursor is a few counts, the same size for 100 files or
100,000. Each evaluation first settles the rows whose runs ended (a failed run's files are asked for
again after a delay, up to :data:`MAX_ATTEMPTS` runs per file version; touching a file asks again).
"""

import datetime as dt
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

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
from reduction_assets.fits.headers import FrameRejected, shown
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
from reduction_assets.tasks import schedule
from reduction_assets.tasks.landing import (
    IgnoredEntry,
    Route,
    decode_name,
    encode_name,
    route_landing_file,
    scan_landing,
)
from reduction_assets.tasks.landing_s3 import MIRROR_FOLDER, MirrorReport, mirror_arrivals

CURSOR_VERSION = 2
LANDING_SENSOR = "landing_sensor"
LANDING_INTERVAL_SECONDS = 10
# A file version is asked for at most this many times; then it waits for an operator (touch it,
# or replace it) and is listed by every idle tick.
MAX_ATTEMPTS = 4


def sensor_retry_delay(attempts: int) -> dt.timedelta:
    """How long the daemon's sensor waits before asking again for files whose run failed (2, 8 and
    32 minutes after the first, second and third failure): long enough for a database or a disk to
    come back, short enough to finish the night."""
    return dt.timedelta(minutes=2 * 4 ** max(attempts - 1, 0))


def no_retry_delay(attempts: int) -> dt.timedelta:
    """`process` asks again at its next invocation: cron is its delay."""
    return dt.timedelta(0)


@dataclass
class LandingTick:
    """What one evaluation decided."""

    by_partition: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # name -> attempt number of this request
    waiting: list[str] = field(default_factory=list)  # not settled yet: asked again next tick
    not_open: dict[str, str] = field(default_factory=dict)  # name -> night whose partition is not open
    deferred: dict[str, str] = field(default_factory=dict)  # name -> partition a run is working on
    retry_later: dict[str, dt.datetime] = field(default_factory=dict)  # name -> when (UTC) after a failure
    gave_up: list[str] = field(default_factory=list)  # failed MAX_ATTEMPTS times
    ignored: list[IgnoredEntry] = field(default_factory=list)
    already: int = 0  # requested earlier: done, or its run in flight
    cursor: str = ""


def _utc(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)


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
    now = time.time() if now is None else now
    tick = LandingTick()
    by_partition: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, state in sorted(files.items()):
        record = known.get(encode_name(name))
        attempt = 1
        if record is not None and record.stamp == (state.size, state.mtime_ns):
            if record.state == REQUESTED and record.run_key in unlaunched:
                attempt = record.attempts
            elif record.state in (DONE, REQUESTED):
                tick.already += 1
                continue
            elif record.attempts >= MAX_ATTEMPTS:
                tick.gave_up.append(name)
                continue
            elif record.retry_at is not None and record.retry_at > _utc(now):
                tick.retry_later[name] = record.retry_at
                continue
            else:
                attempt = record.attempts + 1
        if not state.settled(settle_seconds, now):
            tick.waiting.append(name)
            continue
        try:
            where = route(name)
        except FrameRejected:
            tick.rejects.append(name)
        else:
            key = str(partition_key(where.instrument, where.night))
            if night_not_yet_open(where.night):
                tick.not_open[name] = where.night.isoformat()
                continue
            if not night_in_range(where.night):
                tick.rejects.append(name)
            elif key in busy:
                tick.deferred[name] = key
                continue
            else:
                by_partition[(where.instrument, where.night.isoformat())].append(name)
        tick.attempts[name] = attempt
    tick.by_partition = dict(by_partition)
    return tick


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
    moment = _utc(now)
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


def _run_key(prefix: str, names: list[str], files: dict[str, FileState], attempts: dict[str, int]) -> str:
    # Content-versioned: the same files re-delivered with new content get a new run key, and so does
    # a request made again after a failed run (Dagster launches a sensor's run key only once).
    digest = hashlib.sha256()
    for name in sorted(names):
        state = files[name]
        digest.update(
            f"{encode_name(name)}\0{state.size}:{state.mtime_ns}\0{attempts.get(name, 1)}\n".encode()
        )
    return f"{prefix}:{digest.hexdigest()[:20]}"


def landing_requests(
    tick: LandingTick, files: dict[str, FileState]
) -> tuple[list[RunRequest], list[LandingRequest]]:
    """The run requests of a tick, and the catalog rows that remember them."""
    requests: list[RunRequest] = []
    remembered: list[LandingRequest] = []

    def remember(names: list[str], partition: str | None, run_key: str) -> None:
        remembered.extend(
            LandingRequest(
                name=encode_name(name),
                size_bytes=files[name].size,
                mtime_ns=files[name].mtime_ns,
                partition=partition,
                run_key=run_key,
                attempts=tick.attempts.get(name, 1),
            )
            for name in names
        )

    for (instrument, night), names in sorted(tick.by_partition.items()):
        key = partition_key(instrument, night)
        run_key = _run_key(f"raw_frames:{key}", names, files, tick.attempts)
        attempt = max(tick.attempts.get(name, 1) for name in names)
        requests.append(
            RunRequest(
                run_key=run_key,
                partition_key=key,
                # The partition's masters and reduced frames follow in the same run, in graph order.
                job_name=PROCESS_NIGHT,
                run_config={"ops": {"raw_frames": {"config": {"files": [encode_name(n) for n in names]}}}},
                tags={
                    "reduction_assets/trigger": LANDING_SENSOR,
                    "reduction_assets/files": str(len(names)),
                    "reduction_assets/attempt": str(attempt),
                },
            )
        )
        remember(names, str(key), run_key)
    if tick.rejects:
        run_key = _run_key("landing_rejects", tick.rejects, files, tick.attempts)
        requests.append(
            RunRequest(
                run_key=run_key,
                job_name=QUARANTINE_REJECTS,
                run_config={
                    "ops": {"landing_rejects": {"config": {"files": [encode_name(n) for n in tick.rejects]}}}
                },
                tags={"reduction_assets/trigger": LANDING_SENSOR},
            )
        )
        remember(tick.rejects, None, run_key)
    return requests, remembered


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
    unlaunched: set[str] = set()
    if outcome_of is not None:
        settlements, unlaunched = settle_requests(known, outcome_of, now=now, retry_delay=retry_delay)
        if settlements:
            with catalog.session() as session:
                for settlement in settlements:
                    settle_run_key(
                        session, settlement.run_key, settlement.state, settlement.run_id, settlement.retry_at
                    )
                known = landing_records(session)
    routed: dict[str, KnownRoute] = {}

    def route(name: str) -> Route:
        # What the sensor learns is remembered, so the runs it requests need not open headers again.
        state = scan.files[name]
        try:
            found = route_landing_file(landing, name, registry)
        except FrameRejected:
            routed[encode_name(name)] = (state.size, state.mtime_ns, None, None)
            raise
        routed[encode_name(name)] = (state.size, state.mtime_ns, found.instrument, found.night)
        return found

    tick = plan_landing_tick(
        scan.files,
        known,
        settle_seconds=home.settle_seconds,
        busy=busy,
        unlaunched=unlaunched,
        now=now,
        route=route,
    )
    tick.ignored = scan.ignored
    run_requests, remembered = landing_requests(tick, scan.files)
    if remembered or routed:
        with catalog.session() as session:
            record_requests(session, remembered, requested_by)
            remember_routes(session, routed)
    tick.cursor = tick_cursor(tick, len(remembered))
    if run_requests:
        return tick, SensorResult(run_requests=run_requests, cursor=tick.cursor)
    return tick, SensorResult(skip_reason=SkipReason(describe_idle_tick(tick)), cursor=tick.cursor)


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
    requests = []
    for instrument, night in sorted(
        set(nearer) | set(damaged) | set(rework), key=lambda key: (key[1], key[0])
    ):
        if f"{instrument}|{night.isoformat()}" in busy:
            continue
        frames = sorted(nearer.get((instrument, night), []), key=lambda f: f[0])
        stale = damaged.get((instrument, night))
        asked = rework.get((instrument, night))
        masters = bool((stale and stale.masters) or (asked and asked.masters))
        digest = hashlib.sha256(
            json.dumps([frames, stale and stale.version, asked and asked.ids], sort_keys=True).encode()
        )
        requests.append(
            RunRequest(
                run_key=f"recalibrate:{instrument}|{night.isoformat()}:{digest.hexdigest()[:20]}",
                partition_key=partition_key(instrument, night),
                job_name=REBUILD_MASTERS if masters else REDUCE_FRAMES,
                tags={
                    "reduction_assets/trigger": "operator" if asked else "calibration_sensor",
                    "reduction_assets/frames": str(len(frames)),
                    "reduction_assets/rebuild": "masters" if masters else ("products" if stale else "none"),
                },
            )
        )
    if requests:
        return SensorResult(run_requests=requests)
    return SensorResult(
        skip_reason=SkipReason(
            "no reduced frame has a nearer calibration than the one it was reduced with, nothing is "
            "marked for rebuilding and no operator action waits"
        )
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
