"""What a daemon backfill costs: runs, wall time and the share of it spent in steps.

    python -m benchmarks.backfill [--nights 30] [--before /path/to/older/checkout]

Simulates ``--nights`` lcosim nights into a fresh REDUCTION_HOME, starts `dagster-webserver` and
`dagster-daemon` on it (sensors stopped), and launches through GraphQL the backfill that
`reduction-assets backfill` launches: the five partitioned assets over exactly those nights. Then
the same backfill again, when there is nothing left to do; the backfill the UI's asset dialog
launches (which adds the two weeks of later partitions that depend on those nights through the
calibration window); and one run of one partition (GraphQL ``launchRun`` with only the partition
tag) to show the overhead of a single run. With ``--before``, the same is measured
on another checkout of the package (its path goes first on PYTHONPATH) so that one table compares
both on this machine in one sitting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, RunsFilter
from tqdm import tqdm

from reduction_assets.instruments import load_registry
from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.webserver import NightRange
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets.support.home import Home
from reduction_assets_tests.deployment import LocalDeployment

# An older checkout (--before) may predate stacks: its backfills cover the assets it had.
ASSETS_BEFORE_STACKS = ("raw_frames", "master_bias", "master_dark", "master_flat", "reduced_frames")
LAST_NIGHT = dt.date(2026, 11, 20)


@dataclass
class Measured:
    label: str
    runs: int
    wall: float  # seconds from launch to the backfill's (or run's) end
    in_runs: float  # seconds between each run's start and end, summed
    in_steps: float  # seconds of step execution, summed over runs
    status: str

    @property
    def step_share(self) -> float:
        return self.in_steps / self.wall if self.wall else 0.0

    @property
    def overhead_per_run(self) -> float:
        """Seconds of each run spent outside its steps (process start-up, code loading, events)."""
        return (self.in_runs - self.in_steps) / self.runs if self.runs else 0.0


def simulate(nights: list[dt.date], out: Path) -> list[Path]:
    registry = load_registry()
    frames: list[Path] = []
    for night in tqdm(nights, desc="simulating nights", unit="night"):
        simulated = simulate_night(
            registry["lcosim"],
            night,
            out / night.isoformat(),
            SimulationConfig(seed=night.toordinal() % 1000),
        )
        frames += simulated.frames
    return frames


def deliver(frames: list[Path], landing: Path) -> None:
    settled = time.time() - 3600
    for frame in frames:
        target = landing / f"{frame.parent.name}_{frame.name}"
        shutil.copyfile(frame, target)
        os.utime(target, (settled, settled))


def measure(instance: DagsterInstance, label: str, runs: list, wall: float, status: str) -> Measured:
    in_runs = in_steps = 0.0
    for run in runs:
        record = instance.get_run_record_by_id(run.run_id)
        if record.start_time and record.end_time:
            in_runs += record.end_time - record.start_time
        for step in instance.get_run_step_stats(run.run_id):
            if step.start_time and step.end_time:
                in_steps += step.end_time - step.start_time
    return Measured(label, len(runs), wall, in_runs, in_steps, status)


def backfill(
    deployment: LocalDeployment,
    instance: DagsterInstance,
    label: str,
    nights: list[dt.date],
    assets: tuple[str, ...],
    ui: bool = False,
) -> Measured:
    started = time.time()
    if ui:
        partitions = [f"lcosim|{night.isoformat()}" for night in nights]
        backfill_id = deployment.launch_backfill(list(assets), partitions)
    else:  # as `reduction-assets backfill` launches it
        span = NightRange("lcosim", nights[0].isoformat(), nights[-1].isoformat())
        backfill_id = deployment.client.launch_backfill([span], assets)
    status = deployment.wait_for_backfill(backfill_id)
    wall = time.time() - started
    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    return measure(instance, label, runs, wall, status)


def single_run(deployment: LocalDeployment, instance: DagsterInstance, job: str, partition: str) -> Measured:
    started = time.time()
    run_id = deployment.client.launch_run(job, {"dagster/partition": partition})
    while True:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            break
        time.sleep(0.5)
    wall = time.time() - started
    return measure(instance, f"one run ({job})", [run], wall, run.status.value)


def measure_checkout(
    label: str, frames: list[Path], nights: list[dt.date], checkout: Path | None
) -> list[Measured]:
    root = Path(tempfile.mkdtemp(prefix=f"backfill_{label}_"))
    home = Home(root / "home").ensure()
    if checkout is not None:  # that release's instance settings too
        shutil.copyfile(
            checkout / "reduction_assets" / "defaults" / "dagster.yaml", home.dagster / "dagster.yaml"
        )
    deliver(frames, home.landing)
    results = []
    pythonpath = str(checkout) if checkout is not None else None
    assets = ASSETS_BEFORE_STACKS if checkout is not None else NIGHT_ASSETS
    with LocalDeployment(home, pythonpath=pythonpath) as deployment:
        instance = DagsterInstance.from_config(str(home.dagster))
        try:
            print(f"[{label}] backfill with work over {len(nights)} nights ...", flush=True)
            results.append(
                backfill(
                    deployment, instance, f"{label}: backfill, {len(nights)} nights to do", nights, assets
                )
            )
            print(f"[{label}] the same backfill again, nothing to do ...", flush=True)
            results.append(
                backfill(deployment, instance, f"{label}: backfill, nothing to do", nights, assets)
            )
            if checkout is None:  # the release before this one could not run tag-only launches
                print(f"[{label}] the UI's asset dialog's backfill, nothing to do ...", flush=True)
                results.append(
                    backfill(
                        deployment,
                        instance,
                        f"{label}: UI-style backfill, nothing to do",
                        nights,
                        assets,
                        ui=True,
                    )
                )
                print(f"[{label}] one partition run through launchRun ...", flush=True)
                results.append(
                    single_run(deployment, instance, "process_night", f"lcosim|{nights[-1].isoformat()}")
                )
        finally:
            instance.dispose()
    shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--before", type=Path, help="another checkout of the repository, measured first")
    args = parser.parse_args()
    nights = [LAST_NIGHT - dt.timedelta(days=k) for k in reversed(range(args.nights))]
    with tempfile.TemporaryDirectory(prefix="backfill_frames_") as folder:
        frames = simulate(nights, Path(folder))
        results = []
        if args.before:
            results += measure_checkout("before", frames, nights, args.before.resolve())
        results += measure_checkout("now", frames, nights, None)
    print()
    header = ("runs", "wall s", "in runs s", "in steps s", "steps/wall", "overhead/run s")
    print(f"{'':44s}" + "".join(f"{h:>15s}" for h in header) + "  status")
    for m in results:
        cells = (m.runs, f"{m.wall:.1f}", f"{m.in_runs:.1f}", f"{m.in_steps:.1f}", f"{m.step_share:.0%}",
                 f"{m.overhead_per_run:.1f}")  # fmt: skip
        print(f"{m.label:44s}" + "".join(f"{c:>15}" for c in cells) + f"  {m.status}")
    now = {m.label.split(": ", 1)[-1]: m for m in results if m.label.startswith("now")}
    for m in results:
        case = m.label.split(": ", 1)[-1]
        if m.label.startswith("before") and case in now:
            ratio = m.wall / now[case].wall
            print(f"{case}: wall time before/now {ratio:.1f}x, runs {m.runs} -> {now[case].runs}")


if __name__ == "__main__":
    main()
