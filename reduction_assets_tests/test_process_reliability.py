"""`process` under kills, signals, concurrency and broken databases: no kill deadlocks a home.

These tests run `reduction-assets process` as a separate process (it is killed, signalled and raced
here), on a home of their own, against the Dagster instance in that home.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from sqlalchemy import func, select

from reduction_assets.catalog import Calibration, Catalog, Product, RawFrame
from reduction_assets.orchestration.runs import (
    HOME_TAG,
    HOST_TAG,
    LAUNCHED_BY_TAG,
    PID_TAG,
    PROCESS_LAUNCHER,
    claimed_slots,
)
from reduction_assets.support.home import Home
from reduction_assets_tests.catalog_fixtures import POSTGRES_URL, postgres_available
from reduction_assets_tests.conftest import deliver, frames_of, require

pytestmark = pytest.mark.slow(seconds=190)


def start_process(home: Home, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reduction_assets.cli",
            "--home",
            str(home.root),
            "process",
            "--settle-seconds",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_until_handling(child: subprocess.Popen, signum: int, timeout: float = 120) -> None:
    """Until ``child`` has a handler of its own for ``signum`` (``SigCgt`` in /proc): Python catches
    SIGINT from its start, but SIGTERM only once `process` watches for signals."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the process ended early: {child.communicate()}")
        status = Path(f"/proc/{child.pid}/status").read_text().splitlines()
        caught = int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"the process did not handle signal {signum} within {timeout} s")


# What /proc/<pid>/wchan shows for a thread blocked in `time.sleep` (clock_nanosleep).
SLEEPING = {"hrtimer_nanosleep", "do_nanosleep"}


def wait_until_sleeping(child: subprocess.Popen, timeout: float = 120) -> None:
    """Until the main thread of ``child`` is blocked in `time.sleep` (``/proc/<pid>/wchan``)."""
    deadline = time.monotonic() + timeout
    wchan = ""
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the process ended early: {child.communicate()}")
        wchan = Path(f"/proc/{child.pid}/wchan").read_text().strip()
        if wchan in SLEEPING:
            return
        time.sleep(0.05)
    raise AssertionError(f"the process did not sleep within {timeout} s (last wchan {wchan!r})")


def exit_within(child: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The output of ``child`` once it ends; fails (and kills it) if it has not ended in ``timeout``."""
    try:
        return child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the process did not end within {timeout} s of the signal:\n{out}\n{err}")


def run_process(home: Home, *extra: str, env: dict | None = None, timeout: float = 300):
    child = start_process(home, *extra, env=env)
    out, err = child.communicate(timeout=timeout)
    return child.returncode, out, err


def instance_of(home: Home) -> DagsterInstance:
    return DagsterInstance.from_config(str(home.dagster))


def counts(home: Home) -> dict[str, int]:
    catalog = Catalog(home.catalog_url())
    with catalog.session() as session:
        result = {
            "raw": session.scalar(select(func.count()).select_from(RawFrame)),
            "distinct_raw": session.scalar(select(func.count(func.distinct(RawFrame.checksum)))),
            "masters": session.scalar(select(func.count()).select_from(Calibration)),
            "reduced": session.scalar(select(func.count()).where(Product.status == "reduced")),
            "products": session.scalar(select(func.count()).select_from(Product)),
        }
    catalog.dispose()
    return result


def wait_for(condition, timeout: float = 120.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(step)


@pytest.fixture
def delivered(home, lcosim_night):
    deliver(lcosim_night.frames, home.landing)
    return home


def in_flight_runs(instance: DagsterInstance) -> list[DagsterRun]:
    return [r for r in instance.get_runs() if not r.is_finished]


def test_a_dead_process_run_holding_the_stacking_slot_is_reaped_and_the_night_completes(delivered):
    home = delivered
    instance = instance_of(home.ensure())
    # What `kill -9` during master stacking leaves behind: a STARTED run of `process` that holds the
    # one slot of the stacking pool, and no process behind it.
    dead = DagsterRun(
        job_name="__ASSET_JOB",
        run_id=str(uuid.uuid4()),
        status=DagsterRunStatus.STARTED,
        tags={
            LAUNCHED_BY_TAG: PROCESS_LAUNCHER,
            HOST_TAG: socket.gethostname(),
            HOME_TAG: str(home.root),
            PID_TAG: "999999",
        },
    )
    instance.add_run(dead)
    instance.event_log_storage.set_concurrency_slots("stacking", 1)
    instance.event_log_storage.claim_concurrency_slot("stacking", dead.run_id, "master_bias")
    assert claimed_slots(instance) == [("stacking", dead.run_id)]

    code, out, err = run_process(home, timeout=240)
    assert code == 0, out + err
    assert f"marked run {dead.run_id} of a dead `process` (pid 999999) failed; freed 1 pool slots" in out
    assert "1 runs executed, 0 failed" in out
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert claimed_slots(instance) == [] and in_flight_runs(instance) == []
    assert counts(home)["reduced"] == 12


def test_sigterm_stops_a_process_waiting_for_a_pool_slot_and_its_run_is_not_left_started(delivered):
    home = delivered
    instance = instance_of(home.ensure())
    # Another run (the daemon's, alive) holds the stacking slot: our run waits for it.
    other = DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED)
    instance.add_run(other)
    instance.event_log_storage.set_concurrency_slots("stacking", 1)
    instance.event_log_storage.claim_concurrency_slot("stacking", other.run_id, "master_bias")
    # Unbuffered: the message of the grace period is written just before `os._exit`.
    child = start_process(home, env={"PYTHONUNBUFFERED": "1"})
    wait_for(lambda: any(r.run_id != other.run_id for r in in_flight_runs(instance)), timeout=120, step=0.2)
    ours = next(r for r in in_flight_runs(instance) if r.run_id != other.run_id)

    def blocked():  # Dagster logs this when a step's claim of a slot is refused: the run waits
        return any(
            "blocked by limit for pool stacking" in (entry.message or "")
            for entry in instance.all_logs(ours.run_id)
        )

    wait_for(blocked, timeout=180, step=0.2)
    child.send_signal(signal.SIGTERM)
    # Dagster does not interrupt a run waiting for a slot: `process` marks it failed and exits after
    # the grace period of 5 s, while the other run still holds the slot.
    out, err = exit_within(child, timeout=15)
    assert child.returncode == 128 + signal.SIGTERM, out + err
    assert f"stopped by SIGTERM during run {ours.run_id} (marked failed)" in out, out + err
    assert instance.get_run_by_id(ours.run_id).status == DagsterRunStatus.FAILURE
    assert claimed_slots(instance) == [("stacking", other.run_id)]  # the other run keeps its slot


def test_sigint_while_waiting_for_files_to_settle_stops_at_once_with_130(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias"), home.landing, age_seconds=0)
    child = start_process(home, "--settle-seconds", "600", "--max-wait", "600")
    instance = instance_of(home.ensure())
    # `process` watches for signals, then its only sleep is the wait for the files to settle (600 s).
    wait_until_handling(child, signal.SIGTERM)
    wait_until_sleeping(child)
    child.send_signal(signal.SIGINT)
    out, err = exit_within(child, timeout=10)
    assert child.returncode == 130, out + err
    assert "stopped by SIGINT" in err and instance.get_runs() == []


@pytest.mark.parametrize("kill_point", ["ingestion", "stacking", "reduction"])
def test_kill_at_any_moment_then_rerun_ends_consistent_and_a_second_rerun_does_nothing(delivered, kill_point):
    home = delivered
    home.ensure()
    instance = instance_of(home)
    reached = {
        "ingestion": lambda: any(home.raw.rglob("*.fits")),
        "stacking": lambda: bool(claimed_slots(instance)),
        "reduction": lambda: any((home.products / "reduced").rglob("*")),
    }[kill_point]
    child = start_process(home)
    wait_for(reached, timeout=180, step=0.01)
    child.kill()
    child.communicate()

    code, out, err = run_process(home)
    assert code == 0, out + err
    after = counts(home)
    assert after == {"raw": 32, "distinct_raw": 32, "masters": 4, "reduced": 12, "products": 12}
    assert claimed_slots(instance) == [] and in_flight_runs(instance) == []

    code, out, err = run_process(home)
    assert code == 0 and "0 runs executed" in out, out + err
    assert counts(home) == after


def test_two_concurrent_process_invocations_on_one_home_do_the_work_once(delivered):
    home = delivered
    first, second = start_process(home), start_process(home)
    results = [child.communicate(timeout=300) + (child.returncode,) for child in (first, second)]
    assert [code for _, _, code in results] == [0, 0], results
    outputs = [out for out, _, _ in results]
    assert sum("another reduction-assets process is working on" in out for out in outputs) == 1
    assert sum("runs executed" in out for out in outputs) == 1
    assert counts(home) == {"raw": 32, "distinct_raw": 32, "masters": 4, "reduced": 12, "products": 12}
    runs = instance_of(home).get_runs()
    assert len([r for r in runs if r.tags.get("dagster/partition") == "lcosim|2026-11-20"]) == 1


def test_a_second_process_may_wait_for_the_first(delivered):
    home = delivered
    # Both wait: which one takes the lock first depends on start-up time (importing Dagster), so
    # the test asks only that one does the night and the other, having waited, finds nothing left.
    children = [start_process(home, "--wait", "300") for _ in range(2)]
    results = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    outputs = [out for out, _ in results]
    assert sorted(("1 runs executed" in out, "0 runs executed" in out) for out in outputs) == [
        (False, True),
        (True, False),
    ], outputs
    assert not any("another reduction-assets process" in out for out in outputs)


def test_a_torn_cursor_file_of_release_0_2_is_dropped_and_nothing_is_done_twice(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert run_process(home)[0] == 0
    (home.state / "landing_sensor.cursor").write_bytes(b'{"v": 1, "requested": {"lcosim_2026\xff')
    code, out, err = run_process(home)
    assert code == 0, out + err
    assert "0 runs executed" in out
    assert counts(home)["raw"] == 5 and not (home.state / "landing_sensor.cursor").exists()


def test_frames_of_a_night_not_open_yet_do_not_make_process_wait(home, lcosim_night):
    import datetime as dt

    from reduction_assets_tests.conftest import with_header

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    with_header(
        frames_of(lcosim_night, "bias")[0], home.landing / "early.fits", DAY_OBS=tomorrow.strftime("%Y%m%d")
    )
    # Had it waited for the file, it would give up after --max-wait, say so and exit with 1.
    code, out, err = run_process(home, "--max-wait", "120")
    assert code == 0, out + err
    assert "gave up waiting" not in out and "after --max-wait" not in out, out
    assert f"1 files belong to night {tomorrow.isoformat()}, whose partition opens" in out


@pytest.mark.parametrize(
    "url, cause",
    [
        ("postgresql+psycopg2://postgres@127.0.0.1:1/test", "Connection refused"),
        ("postgresql://postgres@127.0.0.1:5432/test", "must name its driver"),
        ("sqlite:////nonexistent/folder/catalog.sqlite", "unable to open database file"),
    ],
)
def test_a_catalog_that_cannot_be_used_gives_one_line_and_exit_2_before_any_run(
    home, lcosim_night, url, cause
):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    code, _, err = run_process(home, env={"REDUCTION_CATALOG_URL": url}, timeout=60)
    assert code == 2 and cause in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert instance_of(home.ensure()).get_runs() == []


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_named_and_the_password_is_not(home, lcosim_night):
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    url = "postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:5432/no_such_database_here"
    code, out, err = run_process(home, env={"REDUCTION_CATALOG_URL": url}, timeout=60)
    assert code == 2 and 'database "no_such_database_here" does not exist' in err
    assert "s3cret-pw" not in out + err and len(err.strip().splitlines()) == 1


def test_runs_of_process_carry_its_identity(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert run_process(home)[0] == 0
    runs = instance_of(home).get_runs()
    assert sorted(run.job_name for run in runs) == ["process_night", "update_quality_trends"]
    for run in runs:
        assert run.tags[LAUNCHED_BY_TAG] == PROCESS_LAUNCHER and run.tags[HOME_TAG] == str(home.root)
        assert Path(str(home.root)).is_dir() and int(run.tags[PID_TAG]) > 0
