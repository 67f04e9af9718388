"""`make demo-daemon`: a simulated night dropped into landing/ becomes archive records with nothing
running but `dagster-daemon` (no webserver, no command): the landing sensor asks for each night's run,
the run ingests, makes the masters, reduces, stacks and archives.

    python -m reduction_assets.orchestration.daemon_demo --home DIR [--night YYYY-MM-DD] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from reduction_assets.support.home import Home, resolve_home

INSTRUMENTS = ("lcosim", "noirsim")
WORKSPACE = """load_from:
  - python_module:
      module_name: reduction_assets.orchestration.definitions
      attribute: defs
      location_name: reduction_assets
"""


def start_daemon(home, log: Path) -> subprocess.Popen:
    """`dagster-daemon run` on the home, in its own process group (its code server goes with it)."""
    workspace = home.state / "workspace.yaml"
    workspace.write_text(WORKSPACE)
    env = {**os.environ, "DAGSTER_HOME": str(home.dagster), "REDUCTION_HOME": str(home.root)}
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
            env=env,
            cwd=home.root,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_daemon(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def night_rows(home, night: dt.date) -> list[dict]:
    from reduction_assets.catalog import Catalog
    from reduction_assets.catalog.reports import progress_rows

    catalog = Catalog(home.catalog_url())
    catalog.check()  # creates the tables before the first run does
    try:
        with catalog.session() as session:
            return progress_rows(session, night, night, list(INSTRUMENTS))
    finally:
        catalog.dispose()


def main(argv: list[str] | None = None) -> int:
    """Simulate a night, start the daemon, drop the night into landing/ and wait until it is archived."""
    args = _arguments(argv)
    home = resolve_home(args.home).ensure()
    frames = simulate_frames(home, args.night)
    night_rows(home, args.night)  # the catalog exists before the daemon starts
    log = home.state / "daemon.log"
    daemon = start_daemon(home, log)
    print(f"dagster-daemon started (pid {daemon.pid}, log {log}); nothing else runs")
    try:
        time.sleep(5)  # the daemon loads the code location before its first sensor tick
        started = time.monotonic()
        for frame in frames:
            shutil.copyfile(frame, home.landing / frame.name)
        print(f"dropped {len(frames)} frames of {args.night} into {home.landing}")
        watch = Watch(
            home=home, daemon=daemon, night=args.night, log=log, started=started, timeout=args.timeout
        )
        rows = wait_until_archived(watch)
        if rows is None:
            return 1
        print(f"landing to archive records in {time.monotonic() - started:.0f} s, with no command run")
    finally:
        stop_daemon(daemon)
    for row in rows:
        print(
            f"{row['night']} {row['instrument']}: {row['raw']} raw, {row['masters']} masters, "
            f"{row['reduced']} reduced, {row['stacked']} stacks, {row['archived']} archived files"
        )
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line: --home, --night and --timeout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--night", type=dt.date.fromisoformat, default=dt.date(2026, 11, 20))
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args(argv)


def simulate_frames(home, night: dt.date) -> list[Path]:
    """Simulate the night for every demo instrument under the home; the frames' paths."""
    from reduction_assets.instruments import load_registry
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    registry = load_registry()
    frames = []
    for seed, name in enumerate(INSTRUMENTS):
        simulated = simulate_night(
            registry[name], night, home.root / "simulated" / name, SimulationConfig(seed=seed)
        )
        frames += simulated.frames
    return frames


@dataclass(frozen=True)
class Watch:
    """A demo in progress: the daemon working on a night dropped into landing/ at ``started``."""

    home: Home
    daemon: subprocess.Popen
    night: dt.date
    log: Path
    started: float  # time.monotonic()
    timeout: float  # seconds


def wait_until_archived(watch: Watch) -> list[dict] | None:
    """The night's progress rows once every instrument is stacked and archived; None (said on stderr)
    when the daemon stops or the timeout passes first."""
    goal = len(INSTRUMENTS)
    with tqdm(total=goal, desc="nights archived", unit="night") as bar:
        while True:
            rows = night_rows(watch.home, watch.night)
            done = sum(1 for row in rows if row["archived"] and row["stacked"])
            bar.n = done
            bar.refresh()
            if done == goal:
                return rows
            if watch.daemon.poll() is not None:
                print(f"the daemon stopped; see {watch.log}", file=sys.stderr)
                return None
            if time.monotonic() - watch.started > watch.timeout:
                print(f"not done after {watch.timeout:.0f} s; see {watch.log}", file=sys.stderr)
                return None
            time.sleep(2.0)


if __name__ == "__main__":
    sys.exit(main())
