"""Planning a landing tick: which landing files to ask for now, under which run keys, and why the others
wait. The Dagster layer passes in how partitions are named and opened (:class:`PartitionRules`) and turns
each :class:`LandingBatch` into a run request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

from reduction_assets.catalog.landing import DONE, REQUESTED, KnownRoute, LandingRecord, LandingRequest
from reduction_assets.fits.headers import FrameRejected
from reduction_assets.fits.validate import FileState
from reduction_assets.instruments import Registry
from reduction_assets.tasks.landing import IgnoredEntry, Route, encode_name, route_landing_file

# A file version is asked for at most this many times; then it waits for an operator (touch it,
# or replace it) and is listed by every idle tick.
MAX_ATTEMPTS = 4


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


@dataclass(frozen=True)
class PartitionRules:
    """How the partitions of the code location are named and when a night's partition exists."""

    key: Callable[[str, dt.date | str], str]  # (instrument, night) -> partition key text
    not_yet_open: Callable[[dt.date], bool]
    in_range: Callable[[dt.date], bool]


def naive_utc(now: float) -> dt.datetime:
    """A POSIX time as the naive UTC datetime the catalog stores."""
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)


def plan_tick(
    files: Mapping[str, FileState],
    known: Mapping[str, LandingRecord],
    *,
    settle_seconds: float,
    route: Callable[[str], Route],
    now: float,
    rules: PartitionRules,
    busy: Set[str] = frozenset(),
    unlaunched: Set[str] = frozenset(),
) -> LandingTick:
    """The landing files to request now, by partition, and why each of the others waits."""
    tick = LandingTick()
    for name, state in sorted(files.items()):
        attempt = _next_attempt(tick, name, state, known.get(encode_name(name)), unlaunched, now)
        if attempt is None:
            continue
        if not state.settled(settle_seconds, now):
            tick.waiting.append(name)
            continue
        if _place(tick, name, route, rules, busy):
            tick.attempts[name] = attempt
    return tick


def _next_attempt(
    tick: LandingTick,
    name: str,
    state: FileState,
    record: LandingRecord | None,
    unlaunched: Set[str],
    now: float,
) -> int | None:
    """The attempt a file version would be asked for as, or None (noted in the tick) when not now."""
    if record is None or record.stamp != (state.size, state.mtime_ns):
        return 1
    if record.state == REQUESTED and record.run_key in unlaunched:
        return record.attempts
    if record.state in (DONE, REQUESTED):
        tick.already += 1
    elif record.attempts >= MAX_ATTEMPTS:
        tick.gave_up.append(name)
    elif record.retry_at is not None and record.retry_at > naive_utc(now):
        tick.retry_later[name] = record.retry_at
    else:
        return record.attempts + 1
    return None


def _place(
    tick: LandingTick, name: str, route: Callable[[str], Route], rules: PartitionRules, busy: Set[str]
) -> bool:
    """File a settled file under its partition or the rejects (True), or note why it waits (False)."""
    try:
        where = route(name)
    except FrameRejected:
        tick.rejects.append(name)
        return True
    key = rules.key(where.instrument, where.night)
    if rules.not_yet_open(where.night):
        tick.not_open[name] = where.night.isoformat()
        return False
    if not rules.in_range(where.night):
        tick.rejects.append(name)
    elif key in busy:
        tick.deferred[name] = key
        return False
    else:
        tick.by_partition.setdefault((where.instrument, where.night.isoformat()), []).append(name)
    return True


def content_run_key(
    prefix: str, names: Sequence[str], files: Mapping[str, FileState], attempts: Mapping[str, int]
) -> str:
    """A run key that changes with the files' content and with each new attempt."""
    # Content-versioned: the same files re-delivered with new content get a new run key, and so does
    # a request made again after a failed run (Dagster launches a sensor's run key only once).
    digest = hashlib.sha256()
    for name in sorted(names):
        state = files[name]
        digest.update(
            f"{encode_name(name)}\0{state.size}:{state.mtime_ns}\0{attempts.get(name, 1)}\n".encode()
        )
    return f"{prefix}:{digest.hexdigest()[:20]}"


@dataclass(frozen=True)
class LandingBatch:
    """The files one run request asks for: a partition's arrivals, or (``partition`` None) the rejects."""

    names: tuple[str, ...]
    run_key: str
    attempt: int  # the highest attempt number among the files
    partition: str | None = None  # the partition key's text
    instrument: str = ""
    night: str = ""  # ISO date


def landing_batches(
    tick: LandingTick, files: Mapping[str, FileState], key_of: Callable[[str, str], str]
) -> list[LandingBatch]:
    """The tick's batches: one per partition with arrivals, in key order, then the rejects."""
    batches = []
    for (instrument, night), names in sorted(tick.by_partition.items()):
        key = key_of(instrument, night)
        batches.append(
            LandingBatch(
                names=tuple(names),
                run_key=content_run_key(f"raw_frames:{key}", names, files, tick.attempts),
                attempt=max(tick.attempts.get(name, 1) for name in names),
                partition=key,
                instrument=instrument,
                night=night,
            )
        )
    if tick.rejects:
        batches.append(
            LandingBatch(
                names=tuple(tick.rejects),
                run_key=content_run_key("landing_rejects", tick.rejects, files, tick.attempts),
                attempt=max(tick.attempts.get(name, 1) for name in tick.rejects),
            )
        )
    return batches


def batch_rows(
    batch: LandingBatch, files: Mapping[str, FileState], attempts: Mapping[str, int]
) -> list[LandingRequest]:
    """The catalog rows that remember a batch's file versions as requested."""
    return [
        LandingRequest(
            name=encode_name(name),
            size_bytes=files[name].size,
            mtime_ns=files[name].mtime_ns,
            partition=batch.partition,
            run_key=batch.run_key,
            attempts=attempts.get(name, 1),
        )
        for name in batch.names
    ]


@dataclass
class RecordingRouter:
    """Routes landing files and keeps where each version belongs, for the catalog."""

    landing: Path
    registry: Registry
    files: Mapping[str, FileState]
    routed: dict[str, KnownRoute] = field(default_factory=dict)

    def __call__(self, name: str) -> Route:
        """The partition of a landing file (raises FrameRejected), remembered with its version."""
        # What the sensor learns is remembered, so the runs it requests need not open headers again.
        state = self.files[name]
        try:
            found = route_landing_file(self.landing, name, self.registry)
        except FrameRejected:
            self.routed[encode_name(name)] = (state.size, state.mtime_ns, None, None)
            raise
        self.routed[encode_name(name)] = (state.size, state.mtime_ns, found.instrument, found.night)
        return found
