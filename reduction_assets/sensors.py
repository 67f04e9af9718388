"""The landing sensor: new files in landing/ become raw_frames runs, one per affected partition."""

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Set
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
from reduction_assets.catalog.products import frames_to_recalibrate
from reduction_assets.fits.headers import FrameRejected, shown
from reduction_assets.fits.validate import FileState
from reduction_assets.jobs import (
    PROCESS_NIGHT,
    QUARANTINE_REJECTS,
    REBUILD_MASTERS,
    REDUCE_FRAMES,
    process_night,
    quarantine_rejects,
    rebuild_masters,
    reduce_frames,
)
from reduction_assets.landing import (
    IgnoredEntry,
    Route,
    decode_name,
    encode_name,
    route_landing_file,
    scan_landing,
)
from reduction_assets.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    night_in_range,
    night_not_yet_open,
    partition_key,
)
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.runs import partitions_in_flight, reap_dead_process_runs

CURSOR_VERSION = 1


def _stamp(state: FileState) -> str:
    return f"{state.size}:{state.mtime_ns}"


@dataclass
class LandingTick:
    """What one evaluation decided. ``cursor`` is what the next evaluation must start from."""

    by_partition: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # not settled yet: asked again next tick
    not_open: dict[str, str] = field(default_factory=dict)  # name -> night whose partition is not open
    deferred: dict[str, str] = field(default_factory=dict)  # name -> partition a run is working on
    ignored: list[IgnoredEntry] = field(default_factory=list)
    already: int = 0
    cursor: str = ""


def read_cursor(cursor: str | None) -> dict[str, str]:
    """The files already requested, from a cursor; an unreadable cursor counts as empty (everything
    is considered again, and ingestion is idempotent, so nothing is done twice)."""
    try:
        previous = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    if not isinstance(previous, dict) or previous.get("v") != CURSOR_VERSION:
        return {}
    requested = previous.get("requested")
    if not isinstance(requested, dict):
        return {}
    return {str(name): str(stamp) for name, stamp in requested.items()}


def plan_landing_tick(
    files: dict[str, FileState],
    cursor: str | None,
    *,
    settle_seconds: float,
    route: Callable[[str], Route],
    now: float | None = None,
    busy: Set[str] = frozenset(),
) -> LandingTick:
    """Decide which landing files to request, from the file listing and the previous cursor.

    The cursor maps every requested file to the (size, mtime) it was requested with, so a file is
    requested once per content version: re-evaluating with the same cursor never loses a file
    (anything not in it is considered) and never counts one twice (anything in it with the same
    stamp is skipped). A file is requested only after it has been unmodified for ``settle_seconds``.
    Files of a partition in ``busy`` (a run is working on it) and of a night whose partition is not
    open yet stay out of the cursor: they are asked for again later. Files gone from landing/ are
    dropped from the cursor so it stays as small as the landing area.
    """
    now = time.time() if now is None else now
    requested = read_cursor(cursor)
    tick = LandingTick()
    kept = {name: stamp for name, stamp in requested.items() if name in files}
    by_partition: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, state in sorted(files.items()):
        stamp = _stamp(state)
        if kept.get(name) == stamp:
            tick.already += 1
            continue
        if not state.settled(settle_seconds, now):
            tick.waiting.append(name)
            continue
        try:
            where = route(name)
        except FrameRejected:
            tick.rejects.append(name)
        else:
            key = f"{where.instrument}|{where.night.isoformat()}"
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
        kept[name] = stamp
    tick.by_partition = dict(by_partition)
    tick.cursor = json.dumps({"v": CURSOR_VERSION, "requested": kept}, sort_keys=True)
    return tick


def forget_files(cursor: str, names: list[str]) -> str:
    """The cursor without ``names``: they will be requested again by the next evaluation.

    `process` uses this for the files of a run that failed, so the next cron invocation retries them.
    """
    requested = read_cursor(cursor)
    for name in names:
        requested.pop(name, None)
    return json.dumps({"v": CURSOR_VERSION, "requested": requested}, sort_keys=True)


def request_files(request: RunRequest) -> list[str]:
    """The landing files a run request asks to ingest."""
    ops = (request.run_config or {}).get("ops", {})
    return [decode_name(name) for op in ops.values() for name in op.get("config", {}).get("files", [])]


def _run_key(prefix: str, names: list[str], files: dict[str, FileState]) -> str:
    # Content-versioned: the same files re-delivered with new content get a new run key.
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{encode_name(name)}\0{_stamp(files[name])}\n".encode())
    return f"{prefix}:{digest.hexdigest()[:20]}"


def landing_tick_result(tick: LandingTick, files: dict[str, FileState]) -> SensorResult:
    requests = [
        RunRequest(
            run_key=_run_key(f"raw_frames:{instrument}|{night}", names, files),
            partition_key=partition_key(instrument, night),
            # The partition's masters and reduced frames follow in the same run, in graph order.
            job_name=PROCESS_NIGHT,
            run_config={"ops": {"raw_frames": {"config": {"files": [encode_name(n) for n in names]}}}},
            tags={"reduction_assets/trigger": "landing_sensor", "reduction_assets/files": str(len(names))},
        )
        for (instrument, night), names in sorted(tick.by_partition.items())
    ]
    if tick.rejects:
        requests.append(
            RunRequest(
                run_key=_run_key("landing_rejects", tick.rejects, files),
                job_name=QUARANTINE_REJECTS,
                run_config={
                    "ops": {"landing_rejects": {"config": {"files": [encode_name(n) for n in tick.rejects]}}}
                },
                tags={"reduction_assets/trigger": "landing_sensor"},
            )
        )
    if requests:
        return SensorResult(run_requests=requests, cursor=tick.cursor)
    return SensorResult(skip_reason=SkipReason(describe_idle_tick(tick)), cursor=tick.cursor)


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
    if tick.ignored:
        reason += f"; {len(tick.ignored)} ignored (hidden, temporary or not regular files: "
        reason += f"{_some(e.name for e in tick.ignored)})"
    return reason + ")"


def evaluate_landing(
    home: ReductionHomeResource, cursor: str | None, busy: Set[str] = frozenset()
) -> tuple[LandingTick, SensorResult]:
    """One evaluation of the landing sensor's logic (shared by the sensor and `process`)."""
    landing = home.layout().landing
    registry = home.registry()
    scan = scan_landing(landing)
    tick = plan_landing_tick(
        scan.files,
        cursor,
        settle_seconds=home.settle_seconds,
        busy=busy,
        route=lambda name: route_landing_file(landing, name, registry),
    )
    tick.ignored = scan.ignored
    return tick, landing_tick_result(tick, scan.files)


def _instance(context: SensorEvaluationContext) -> DagsterInstance | None:
    """The sensor's instance (None only in tests that evaluate the sensor without one)."""
    try:
        return context.instance
    except DagsterInvariantViolationError:
        return None


@sensor(
    name="landing_sensor",
    jobs=[process_night, quarantine_rejects],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches landing/ and requests raw_frames runs for each night and instrument with "
    "new, settled files.",
)
def landing_sensor(context: SensorEvaluationContext, home: ReductionHomeResource) -> SensorResult:
    busy: Set[str] = frozenset()
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
    tick, result = evaluate_landing(home, context.cursor, busy)
    if tick.waiting or tick.deferred or tick.not_open:
        context.log.info(
            "%d files waiting to settle, %d for a run in flight, %d for their night's partition",
            len(tick.waiting),
            len(tick.deferred),
            len(tick.not_open),
        )
    return result


def evaluate_recalibration(home: ReductionHomeResource, busy: Set[str] = frozenset()) -> SensorResult:
    """Requests runs for partitions whose frames now have nearer calibrations (reduced_frames) or
    that hold masters or products marked stale because their files were found damaged (the
    partition's masters too when one of them is stale). Partitions in ``busy`` wait: a run is
    working on them."""
    registry = home.registry()
    with home.catalog().session() as session:
        nearer = frames_to_recalibrate(session, registry, CALIBRATION_WINDOW_NIGHTS)
        damaged = {(p.instrument, p.night): p for p in stale_partitions(session)}
    requests = []
    for instrument, night in sorted(set(nearer) | set(damaged), key=lambda key: (key[1], key[0])):
        if f"{instrument}|{night.isoformat()}" in busy:
            continue
        frames = sorted(nearer.get((instrument, night), []), key=lambda f: f[0])
        stale = damaged.get((instrument, night))
        digest = hashlib.sha256(json.dumps([frames, stale and stale.version], sort_keys=True).encode())
        job_name = REBUILD_MASTERS if stale and stale.masters else REDUCE_FRAMES
        requests.append(
            RunRequest(
                run_key=f"recalibrate:{instrument}|{night.isoformat()}:{digest.hexdigest()[:20]}",
                partition_key=partition_key(instrument, night),
                job_name=job_name,
                tags={
                    "reduction_assets/trigger": "calibration_sensor",
                    "reduction_assets/frames": str(len(frames)),
                    "reduction_assets/rebuild": "masters"
                    if stale and stale.masters
                    else ("products" if stale else "none"),
                },
            )
        )
    if requests:
        return SensorResult(run_requests=requests)
    return SensorResult(
        skip_reason=SkipReason(
            "no reduced frame has a nearer calibration than the one it was reduced with, and nothing is "
            "marked for rebuilding"
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
