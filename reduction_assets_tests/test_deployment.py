"""The platform as operators run it: `dagster-webserver` and `dagster-daemon` on a home, runs launched
through GraphQL. Backfills of a range of nights, API launches with only the partition tag and their
re-execution, and runs whose worker dies, retried by the daemon.

The deployment, the backfill of the two nights and the API launch are module fixtures (started once,
whichever test asks first): each test names the state it needs, runs alone and in any order."""

import contextlib
import datetime as dt
import io
import os
import re
import signal

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from reduction_assets.catalog import Catalog, Product
from reduction_assets.cli import main
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT, deliver
from reduction_assets_tests.deployment import LocalDeployment, wait_for

pytestmark = pytest.mark.slow(seconds=270)

NIGHTS = [NIGHT - dt.timedelta(days=1), NIGHT]
KEY = f"lcosim|{NIGHT.isoformat()}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, registry):
    home = Home(tmp_path_factory.mktemp("deployment") / "home").ensure()
    for night in NIGHTS:
        simulated = simulate_night(
            registry["lcosim"], night, home.root / "sim" / night.isoformat(), SimulationConfig(seed=night.day)
        )
        deliver(simulated.frames, home.landing, [f"{night.isoformat()}_{f.name}" for f in simulated.frames])
    with LocalDeployment(home) as running:
        instance = DagsterInstance.from_config(str(home.dagster))
        running.instance = instance
        yield running
        instance.dispose()


@pytest.fixture(scope="module")
def backfilled(deployment):
    """`reduction-assets backfill` of the two nights with ``--wait``: its exit code and output. The
    nights hold data (raw frames, masters, products) afterwards."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "backfill",
                *(n.isoformat() for n in NIGHTS),
                "--instrument",
                "lcosim",
                "--url",
                deployment.url,
                "--wait",
            ]
        )
    return code, out.getvalue()


@pytest.fixture(scope="module")
def launched(deployment):
    """A process_night run launched through GraphQL with only the partition tag, once it finished."""
    run_id = deployment.client.launch_run("process_night", {"dagster/partition": KEY})
    return wait_for(lambda: finished(deployment.instance, run_id))


def finished(instance, run_id):
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def products(home):
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            return session.query(Product).all()
    finally:
        catalog.dispose()


def test_the_backfill_command_does_two_nights_in_one_run(deployment, backfilled):
    code, out = backfilled
    assert code == 0, out
    backfill_id = re.search(r"backfill (\S+):", out).group(1)
    runs = deployment.instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
    assert {key.path[-1] for key in runs[0].asset_selection} == {
        "raw_frames",
        "master_bias",
        "master_dark",
        "master_flat",
        "reduced_frames",
        "stacks",
        "archive_records",
        "quality_metrics",
    }
    assert len([p for p in products(deployment.home) if p.status == "reduced" and p.night in NIGHTS]) == 24


def test_reprocess_launches_a_daemon_backfill_of_the_chosen_assets(deployment, backfilled, capsys):
    # `reprocess` plans only nights that hold data: the backfill's.
    assert backfilled[0] == 0, backfilled[1]
    code = main(
        [
            "--home", str(deployment.home.root), "reprocess", *(n.isoformat() for n in NIGHTS),
            "--instrument", "lcosim", "--assets", "reduced_frames,stacks", "--url", deployment.url,
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    backfill_id = re.search(r"backfill (\S+):", out).group(1)
    assert f"{deployment.url}/runs/b/{backfill_id}?tab=partitions" in out
    assert deployment.wait_for_backfill(backfill_id) in ("COMPLETED", "COMPLETED_SUCCESS")
    runs = deployment.instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
    assert {key.path[-1] for key in runs[0].asset_selection} == {"reduced_frames", "stacks"}


def test_a_run_launched_through_graphql_with_only_the_partition_tag_succeeds(deployment, launched):
    assert launched.status == DagsterRunStatus.SUCCESS, deployment.logs.read_text()[-3000:]
    assert launched.tags["dagster/partition"] == KEY


def test_such_a_run_can_be_re_executed(deployment, launched):
    parent = launched.run_id
    assert launched.status == DagsterRunStatus.SUCCESS, deployment.logs.read_text()[-3000:]
    run_id = deployment.client.reexecute(parent)
    run = wait_for(lambda: finished(deployment.instance, run_id))
    assert run.status == DagsterRunStatus.SUCCESS and run.parent_run_id == parent
    assert run.tags["dagster/partition"] == KEY


def test_a_run_whose_worker_dies_is_retried_by_the_daemon(deployment, registry):
    night = NIGHT - dt.timedelta(days=2)
    simulated = simulate_night(
        registry["lcosim"], night, deployment.home.root / "sim" / "retry", SimulationConfig(seed=5)
    )
    deliver(simulated.frames, deployment.home.landing, [f"retry_{f.name}" for f in simulated.frames])
    run_id = deployment.client.launch_run(
        "process_night", {"dagster/partition": f"lcosim|{night.isoformat()}"}
    )
    instance = deployment.instance

    def worker_pid():
        for entry in instance.all_logs(run_id):
            found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
            if found:
                return int(found.group(1))
        return None

    pid = wait_for(worker_pid, step=0.1)
    os.kill(pid, signal.SIGKILL)
    failed = wait_for(lambda: finished(instance, run_id))
    assert failed.status == DagsterRunStatus.FAILURE

    def retry():
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/parent_run_id": run_id}))
        return runs[0] if runs and runs[0].is_finished else None

    retried = wait_for(retry, timeout=300)
    assert retried.status == DagsterRunStatus.SUCCESS and retried.tags["dagster/retry_number"] == "1"
    reduced = [p for p in products(deployment.home) if p.status == "reduced" and p.night == night]
    assert len(reduced) == 12


def test_the_multiprocess_executor_runs_each_step_in_its_own_process(tmp_path, lcosim_night):
    from reduction_assets_tests.conftest import frames_of

    home = Home(tmp_path / "home").ensure()
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    with LocalDeployment(home, env={"REDUCTION_EXECUTOR": "multiprocess"}) as running:
        run_id = running.client.launch_run("process_night", {"dagster/partition": KEY})
        instance = DagsterInstance.from_config(str(home.dagster))
        try:
            run = wait_for(lambda: finished(instance, run_id))
            messages = [entry.message or "" for entry in instance.all_logs(run_id)]
        finally:
            instance.dispose()
    assert run.status == DagsterRunStatus.SUCCESS, running.logs.read_text()[-3000:]
    assert any("Executing steps using multiprocess executor" in m for m in messages)
    launched = [m for m in messages if m.startswith("Launching subprocess for")]
    assert (
        len(launched) == 8
    )  # raw frames, three masters, reduced frames, stacks, archive, quality: a process each
