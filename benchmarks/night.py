"""A night of about 100 frames of 2048x2048 through Dagster end to end.

    python -m benchmarks.night [--size 2048] [--dithers 14] [--late 3] [--keep DIR]

1. Simulates an lcosim night (11 biases, 11 darks, 11 flats in each of 2 filters, 4 x ``--dithers``
   science frames of 2 targets: 56 by default, 32 with ``--dithers 8``) into a fresh REDUCTION_HOME
   and runs it through `reduction-assets process` (the landing sensor's logic, runs executed in this
   process on the home's Dagster instance): wall time, time per frame, and the time spent inside the
   science code (masters, stacking, WCS: every call the assets make into
   ``reduction_assets.reduction``; and the reduced frames' pool, whose workers calibrate and
   extract sources: the time the step waits for its results, reading the raw frames included)
   against the rest (orchestration, FITS and store I/O, hashing, catalog, archive).
2. Starts `dagster-daemon` on that home (the masters are made) and drops ``--late`` new science
   frames into landing/, one at a time: the time from the drop to the frame's reduced product in the
   catalog, with the daemon's default sensor tick.

Prints one table; the targets are outside-science <= 10 % of the wall time and latency <= 30 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from reduction_assets.catalog import Catalog, Product, RawFrame
from reduction_assets.instruments import load_registry
from reduction_assets.orchestration.assets import calibrations, science, stacks
from reduction_assets.orchestration.daemon_demo import start_daemon, stop_daemon
from reduction_assets.orchestration.process import process_landing
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets.support import parallel
from reduction_assets.support.home import Home

NIGHT = dt.date(2026, 11, 20)
# The calls the assets make into the science code, by the module attribute they are looked up as.
SCIENCE_CALLS = {
    calibrations: ("build_master", "fit_pedestal_and_rate"),
    science: ("sky_positions",),
    stacks: ("assess_members", "stack_images", "extract_sources", "sky_positions"),
}


def time_science_calls() -> dict[str, float]:
    """Wrap the science calls so that each adds its seconds to the returned totals."""
    totals: dict[str, float] = defaultdict(float)
    for module, names in SCIENCE_CALLS.items():
        for name in names:
            label = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
            setattr(module, name, _timed(getattr(module, name), label, totals))
    # The workers' own time cannot be seen from here: the step's wait for each result is counted.
    parallel.FramePool.map_in_order = _timed_results(parallel.FramePool.map_in_order, totals)
    return totals


def _timed_results(original, totals: dict[str, float]):
    @functools.wraps(original)
    def timed(*args, **kwargs):
        results = original(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(results)
            except StopIteration:
                return
            finally:
                totals["reduced frames (pool)"] += time.perf_counter() - start
            yield item

    return timed


def _timed(original, label: str, totals: dict[str, float]):
    @functools.wraps(original)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    return timed


def deliver(frames: list[Path], landing: Path, prefix: str = "", age: float = 3600.0) -> list[str]:
    names = []
    for frame in frames:
        target = landing / f"{prefix}{frame.name}"
        shutil.copyfile(frame, target)
        past = time.time() - age
        os.utime(target, (past, past))
        names.append(target.name)
    return names


def reduced_product(home: Home, name: str) -> bool:
    catalog = Catalog(home.catalog_url())
    catalog.check()  # creates the tables before the first run does
    try:
        with catalog.session() as session:
            found = session.execute(
                select(Product.status)
                .join(RawFrame, Product.raw_frame_id == RawFrame.id)
                .where(RawFrame.original_name == name)
            ).first()
            return found is not None and found[0] == "reduced"
    finally:
        catalog.dispose()


def measure_latency(home: Home, frames: list[Path]) -> list[tuple[float, float, float, float]]:
    """Drop each frame into landing/ with `dagster-daemon` running, once the runs before it have
    ended; returns, per frame, (drop to reduced product, drop to run created by the sensor, created
    to started: the launch of the run's process, started to reduced product) in seconds."""
    from dagster import DagsterInstance

    from reduction_assets.orchestration.runs import IN_FLIGHT_STATUSES

    log = home.state / "daemon.log"
    daemon = start_daemon(home, log)
    instance = DagsterInstance.from_config(str(home.dagster))
    measured = []
    try:
        time.sleep(10)  # the daemon loads the code location and ticks once
        for frame in frames:
            (name,) = deliver([frame], home.landing, prefix="late_", age=0.0)
            dropped, wall_dropped = time.perf_counter(), time.time()
            while not reduced_product(home, name):
                if time.perf_counter() - dropped > 300:
                    raise SystemExit(f"{name} not reduced after 300 s; see {log}")
                time.sleep(0.25)
            latency = time.perf_counter() - dropped
            (run,) = instance.get_runs(limit=1)
            record = instance.get_run_record_by_id(run.run_id)
            created = record.create_timestamp.timestamp()
            measured.append((latency, created - wall_dropped, record.start_time - created,
                             wall_dropped + latency - record.start_time))  # fmt: skip
            while instance.get_runs(filters=_in_flight(IN_FLIGHT_STATUSES)):
                time.sleep(1.0)  # the next frame arrives when the partition is free again
    finally:
        instance.dispose()
        stop_daemon(daemon)
    return measured


def _in_flight(statuses):
    from dagster import RunsFilter

    return RunsFilter(statuses=statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="imaging area NxN (default 2048)")
    parser.add_argument(
        "--dithers", type=int, default=14, help="science frames per target and filter (4 x this in all)"
    )
    parser.add_argument(
        "--late", type=int, default=3, help="science frames dropped one by one under the daemon"
    )
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-night-"))
    registry = load_registry()
    config = SimulationConfig(
        size=(args.size, args.size), seed=3, n_bias=11, n_dark=11, n_flat=11, n_dither=args.dithers
    )
    print(f"simulating {args.size}x{args.size} frames into {work} ...")
    night = simulate_night(registry["lcosim"], NIGHT, work / "sim", config)
    late = simulate_night(
        registry["lcosim"],
        NIGHT,
        work / "late",
        SimulationConfig(size=config.size, seed=4, n_targets=1, n_dither=args.late),
    )
    late_science = [f for f in late.frames if f.name.endswith("_science.fits")][: args.late]
    home = Home(work / "home").ensure()
    deliver(night.frames, home.landing)

    totals = time_science_calls()
    started = time.perf_counter()
    outcome = process_landing(home, settle_seconds=1.0, echo=lambda line: None)
    wall = time.perf_counter() - started
    assert not outcome.failed, outcome.runs
    in_science = sum(totals.values())
    frames = len(night.frames)

    latencies = measure_latency(home, late_science) if late_science else []
    print()
    print(f"night of {frames} frames of {args.size}x{args.size} ({len(outcome.runs)} runs), one process run:")
    print(f"  {'measure':44s} {'value':>10s}")
    print(f"  {'wall time, landing to archive records (s)':44s} {wall:10.1f}")
    print(f"  {'wall time per frame (s)':44s} {wall / frames:10.2f}")
    print(f"  {'inside the science code (s)':44s} {in_science:10.1f}")
    for label, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"    {label:42s} {seconds:10.1f}")
    share = (wall - in_science) / wall
    print(f"  {'outside it: orchestration, I/O, catalog (s)':44s} {wall - in_science:10.1f}")
    print(f"  {'outside share of the wall time (target <= 10 %)':44s} {share:10.1%}")
    if latencies:
        print(
            f"landing-to-reduced latency under the daemon, {len(latencies)} science frames (target <= 30 s):"
        )
        print(f"  {'':8s} {'total s':>8s} {'to run s':>9s} {'launch s':>9s} {'in run s':>9s}")
        for i, (total, waited, launch, in_run) in enumerate(latencies, 1):
            print(f"  frame {i:<2d} {total:8.1f} {waited:9.1f} {launch:9.1f} {in_run:9.1f}")
        middle = statistics.median(t[0] for t in latencies)
        print(f"  median {middle:.1f} s (to run: the settle time and the sensor's 30 s interval)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
