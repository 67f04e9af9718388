"""The landing sensor: new files in landing/ become raw_frames runs, one per affected partition."""


import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from reduction_assets.fits.headers import FrameRejected
from reduction_assets.fits.validate import FileState
from reduction_assets.landing import Route, route_file, scan_landing
from reduction_assets.catalog.queries import frames_to_recalibrate
from reduction_assets.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    night_in_range,
    night_not_yet_open,
    partition_key,
)
from reduction_assets.resources import ReductionHomeResource

CURSOR_VERSION = 1
PARTITION_ASSETS = [AssetKey(name) for name in
                    ("raw_frames", "master_bias", "master_dark", "master_flat", "reduced_frames")]


def _stamp(state: FileState) -> str:
    return f"{state.size}:{state.mtime_ns}"


@dataclass
class LandingTick:
    """What one evaluation decided. ``cursor`` is what the next evaluation must start from."""

    by_partition: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    already: int = 0
    cursor: str = ""


def plan_landing_tick(
    files: dict[str, FileState],
    cursor: str | None,
    *,
    settle_seconds: float,
    route: Callable[[str], Route],
    now: float | None = None,
) -> LandingTick:
    """Decide which landing files to request, from the file listing and the previous cursor.

    The cursor maps every requested file to the (size, mtime) it was requested with, so a file is
    requested once per content version: re-evaluating with the same cursor never loses a file
    (anything not in it is considered) and never counts one twice (anything in it with the same
    stamp is skipped). A file is requested only after it has been unmodified for ``settle_seconds``.
    Files gone from landing/ are dropped from the cursor so it stays as small as the landing area.
    """
    now = time.time() if now is None else now
    previous = json.loads(cursor) if cursor else {}
    requested: dict[str, str] = previous.get("requested", {}) if previous.get("v") == CURSOR_VERSION else {}
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
            if night_in_range(where.night):
                by_partition[(where.instrument, where.night.isoformat())].append(name)
            elif night_not_yet_open(where.night):
                tick.waiting.append(name)
                continue  # not in the cursor: asked again once its partition exists
            else:
                tick.rejects.append(name)
        kept[name] = stamp
    tick.by_partition = dict(by_partition)
    tick.cursor = json.dumps({"v": CURSOR_VERSION, "requested": kept}, sort_keys=True)
    return tick


def forget_files(cursor: str, names: list[str]) -> str:
    """The cursor without ``names``: they will be requested again by the next evaluation.

    `process` uses this for the files of a run that failed, so the next cron invocation retries them.
    """
    state = json.loads(cursor)
    for name in names:
        state.get("requested", {}).pop(name, None)
    return json.dumps(state, sort_keys=True)


def request_files(request: RunRequest) -> list[str]:
    """The landing files a run request asks to ingest."""
    ops = (request.run_config or {}).get("ops", {})
    return [name for op in ops.values() for name in op.get("config", {}).get("files", [])]


def _run_key(prefix: str, names: list[str], files: dict[str, FileState]) -> str:
    # Content-versioned: the same files re-delivered with new content get a new run key.
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}\0{_stamp(files[name])}\n".encode())
    return f"{prefix}:{digest.hexdigest()[:20]}"


def landing_tick_result(tick: LandingTick, files: dict[str, FileState]) -> SensorResult:
    requests = [
        RunRequest(
            run_key=_run_key(f"raw_frames:{instrument}|{night}", names, files),
            partition_key=partition_key(instrument, night),
            # The partition's masters and reduced frames follow in the same run, in graph order.
            asset_selection=PARTITION_ASSETS,
            run_config={"ops": {"raw_frames": {"config": {"files": names}}}},
            tags={"reduction_assets/trigger": "landing_sensor", "reduction_assets/files": str(len(names))},
        )
        for (instrument, night), names in sorted(tick.by_partition.items())
    ]
    if tick.rejects:
        requests.append(RunRequest(
            run_key=_run_key("landing_rejects", tick.rejects, files),
            asset_selection=[AssetKey("landing_rejects")],
            run_config={"ops": {"landing_rejects": {"config": {"files": tick.rejects}}}},
            tags={"reduction_assets/trigger": "landing_sensor"},
        ))
    if requests:
        return SensorResult(run_requests=requests, cursor=tick.cursor)
    reason = f"no new files in landing/ ({tick.already} already requested"
    if tick.waiting:
        shown = ", ".join(tick.waiting[:5]) + (" …" if len(tick.waiting) > 5 else "")
        reason += f"; {len(tick.waiting)} waiting to settle: {shown}"
    reason += ")"
    return SensorResult(skip_reason=SkipReason(reason), cursor=tick.cursor)


def evaluate_landing(home: ReductionHomeResource, cursor: str | None) -> tuple[LandingTick, SensorResult]:
    """One evaluation of the landing sensor's logic (shared by the sensor and `process`)."""
    landing = home.layout().landing
    registry = home.registry()
    files = scan_landing(landing)
    tick = plan_landing_tick(
        files, cursor, settle_seconds=home.settle_seconds,
        route=lambda name: route_file(Path(landing, name), registry))
    return tick, landing_tick_result(tick, files)


@sensor(
    name="landing_sensor",
    asset_selection=[*PARTITION_ASSETS, AssetKey("landing_rejects")],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches landing/ and requests raw_frames runs for each night and instrument with "
    "new, settled files.",
)
def landing_sensor(context: SensorEvaluationContext, home: ReductionHomeResource) -> SensorResult:
    tick, result = evaluate_landing(home, context.cursor)
    if tick.waiting:
        context.log.info("%d files waiting to settle", len(tick.waiting))
    return result


def evaluate_recalibration(home: ReductionHomeResource) -> SensorResult:
    """Requests reduced_frames runs for partitions whose frames now have nearer calibrations."""
    registry = home.registry()
    with home.catalog().session() as session:
        stale = frames_to_recalibrate(
            session, {name: registry[name].darks_include_bias for name in registry.names},
            CALIBRATION_WINDOW_NIGHTS)
    requests = []
    for (instrument, night), frames in sorted(stale.items()):
        digest = hashlib.sha256(json.dumps(sorted(frames, key=lambda f: f[0]), sort_keys=True).encode())
        requests.append(RunRequest(
            run_key=f"recalibrate:{instrument}|{night.isoformat()}:{digest.hexdigest()[:20]}",
            partition_key=partition_key(instrument, night),
            asset_selection=[AssetKey("reduced_frames")],
            tags={"reduction_assets/trigger": "calibration_sensor",
                  "reduction_assets/frames": str(len(frames))}))
    if requests:
        return SensorResult(run_requests=requests)
    return SensorResult(skip_reason=SkipReason(
        "no reduced frame has a nearer calibration than the one it was reduced with"))


@sensor(
    name="calibration_sensor",
    asset_selection=[AssetKey("reduced_frames")],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Re-reduces frames that used an earlier night's calibrations (or none) once a nearer "
    "one exists.",
)
def calibration_sensor(context: SensorEvaluationContext, home: ReductionHomeResource) -> SensorResult:
    return evaluate_recalibration(home)
