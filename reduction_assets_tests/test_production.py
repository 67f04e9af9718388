"""The production topology as separate local processes on PostgreSQL (deploy/dagster.yaml,
deploy/workspace.yaml): a code server, the daemon and the webserver; steps on Celery workers over the
local RabbitMQ. Everything is checked through the webserver's GraphQL API and the catalog."""

from __future__ import annotations

import hashlib
import re
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from reduction_assets.catalog import Calibration, Catalog, Product, RawFrame
from reduction_assets.catalog.models import ArchiveRecord, Stack, StackMember
from reduction_assets.cli import main
from reduction_assets.support.home import Home
from reduction_assets_tests.catalog_fixtures import BROKER, POSTGRES_URL, broker_available, postgres_available
from reduction_assets_tests.conftest import NIGHT, deliver, require
from reduction_assets_tests.deployment import DEPLOY, ProductionDeployment, wait_for

pytestmark = [pytest.mark.slow(seconds=420), pytest.mark.postgres]

KEY = f"lcosim|{NIGHT.isoformat()}"

MATERIALIZATIONS = """query($asset: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $asset}) { ... on Asset {
    assetMaterializations(partitions: $partitions) { partition runId } } } }"""

RUNS = """{ runsOrError { ... on Runs { results { runId jobName status
  tags { key value } } } } }"""


def materialized(deployment, asset: str) -> list[dict]:
    data = deployment.graphql(MATERIALIZATIONS, {"asset": [asset], "partitions": [KEY]})
    return (data["assetOrError"] or {}).get("assetMaterializations") or []


def runs(deployment) -> list[dict]:
    return deployment.graphql(RUNS)["runsOrError"]["results"]


def settled(deployment) -> list[dict] | None:
    """The runs, once there is at least one and none is queued or in progress."""
    found = runs(deployment)
    in_flight = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
    return found if found and not any(r["status"] in in_flight for r in found) else None


def catalog_counts(url: str) -> dict[str, int]:
    catalog = Catalog(url)
    try:
        with catalog.session() as session:
            return {
                "masters": session.scalar(select(func.count()).select_from(Calibration)),
                "reduced": session.scalar(select(func.count()).where(Product.status == "reduced")),
                "archive": session.scalar(select(func.count()).select_from(ArchiveRecord)),
            }
    finally:
        catalog.dispose()


def product_checksums(home: Home, url: str) -> dict[str, str]:
    """SHA-256 of every master and reduced frame, by its path in the product store."""
    catalog = Catalog(url)
    try:
        with catalog.session() as session:
            paths = [p.path for p in session.query(Product).all()]
            paths += [c.path for c in session.query(Calibration).all()]
    finally:
        catalog.dispose()
    return {
        path: hashlib.sha256(Path(home.products, path).read_bytes()).hexdigest() for path in paths if path
    }


@pytest.fixture
def postgres():
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    return POSTGRES_URL


LOGS = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on EngineEvent { message metadataEntries { label
    ... on TextMetadataEntry { text } } } } } } }"""


def celery_workers_of(deployment, run_id: str) -> list[str]:
    """The Celery workers that executed the run's steps, in order (from its engine events)."""
    events = deployment.graphql(LOGS, {"runId": run_id})["logsForRun"]["events"]
    return [
        entry["text"]
        for event in events
        if event["__typename"] == "EngineEvent" and "in celery worker" in (event["message"] or "")
        for entry in event["metadataEntries"]
        if entry["label"] == "Celery worker"
    ]


@pytest.fixture
def broker():
    """The local RabbitMQ (tests that use it are marked ``rabbitmq``)."""
    require(broker_available(), f"RabbitMQ is not reachable at {BROKER.replace('guest:guest', 'guest:**')}")
    return BROKER


@pytest.mark.rabbitmq
def test_two_celery_workers_make_the_same_products_as_an_in_process_run(
    tmp_path, postgres, broker, lcosim_night
):
    reference = Home(tmp_path / "in_process").ensure()
    deliver(lcosim_night.frames, reference.landing)
    assert main(["--home", str(reference.root), "process", "--settle-seconds", "0"]) == 0
    expected = product_checksums(reference, reference.catalog_url())

    env = {"REDUCTION_EXECUTOR": "celery", "REDUCTION_CELERY_BROKER_URL": broker}
    with ProductionDeployment(tmp_path / "celery", postgres, workers=2, env=env) as deployment:
        deliver(lcosim_night.frames, deployment.home.landing)
        wait_for(lambda: materialized(deployment, "archive_records"), 600, "archive records", deployment)
        done = wait_for(lambda: settled(deployment), 300, "the end of the runs", deployment)
        assert {r["status"] for r in done} == {"SUCCESS"}, done
        workers = [name for run in done for name in celery_workers_of(deployment, run["runId"])]
        produced = product_checksums(deployment.home, deployment.catalog_url)
        log = deployment.log_tail(20000)
    assert {name.split("@")[0] for name in workers} == {"worker1", "worker2"}, workers
    assert len(workers) >= 7  # raw frames, three masters, reduced frames, stacks, archive
    assert len(expected) == 16 and produced == expected  # 4 masters, 12 reduced frames, byte for byte
    assert "guest:guest" not in log


def instance_events(deployment, where: str) -> list[tuple[str, str]]:
    """(run id, event JSON) of the instance's events matching a SQL condition, oldest first, read
    from PostgreSQL directly (polled faster than GraphQL allows)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(deployment.catalog_url).set(database=deployment.databases["instance"])
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    text(f"select run_id, event from event_logs where {where} order by id")
                )
            ]
    finally:
        engine.dispose()


def stacks_workers(deployment) -> list[str]:
    """The Celery workers (``worker1``, ``worker2``) that started executing a stacks step, in order."""
    rows = instance_events(
        deployment,
        "step_key = 'stacks' and dagster_event_type = 'ENGINE_EVENT' and event like '%in celery worker%'",
    )
    return [found.group(1) for _, event in rows if (found := re.search(r"(worker\d)@", event))]


def run_worker_in_stacks(deployment) -> int | None:
    """The pid of the run worker (the process of a run) once its stacks step has started."""
    started = instance_events(deployment, "step_key = 'stacks' and dagster_event_type = 'STEP_START'")
    if not started:
        return None
    run_id = started[0][0]
    for _, event in instance_events(
        deployment, f"run_id = '{run_id}' and event like '%Started process for run%'"
    ):
        found = re.search(r"Started process for run \(pid: (\d+)\)", event)
        if found:
            return int(found.group(1))
    return None


def stacks_after(deployment, monkeypatch) -> tuple[list, list, int]:
    """The night's stacks, their (stack, product) member pairs, and what `verify` returned."""
    catalog = Catalog(deployment.catalog_url)
    with catalog.session() as session:
        stacks = session.query(Stack).all()
        members = session.query(StackMember.stack_id, StackMember.product_id).all()
    catalog.dispose()
    monkeypatch.setenv("REDUCTION_CATALOG_URL", deployment.catalog_url)
    # The daemon's sensors may hold the home for a moment after the last run ended: wait for them.
    return stacks, members, main(["--home", str(deployment.home.root), "verify", "--wait", "120"])


@pytest.fixture(scope="module")
def wide_night(tmp_path_factory, registry):
    """A night of 1024² frames, one target in two filters: stacks that take seconds, long enough
    to kill a worker in the middle of one."""
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    config = SimulationConfig(size=(1024, 1024), seed=23, n_targets=1, n_bias=3, n_dark=3, n_flat=3)
    return simulate_night(registry["lcosim"], NIGHT, tmp_path_factory.mktemp("wide_night"), config)


@pytest.mark.rabbitmq
def test_a_celery_worker_killed_in_the_middle_of_a_stack_leaves_the_step_to_the_other(
    tmp_path, postgres, broker, wide_night, monkeypatch
):
    env = {"REDUCTION_EXECUTOR": "celery", "REDUCTION_CELERY_BROKER_URL": broker}
    with ProductionDeployment(tmp_path, postgres, workers=2, env=env) as deployment:
        deliver(wide_night.frames, deployment.home.landing)
        victim = wait_for(lambda: stacks_workers(deployment), 600, "the stacks step on a worker", deployment)[
            0
        ]
        deployment.stop(victim, signal.SIGKILL)  # the machine is gone: no goodbye to the broker
        wait_for(lambda: materialized(deployment, "archive_records"), 600, "archive records", deployment)
        done = wait_for(lambda: settled(deployment), 300, "the end of the runs", deployment)
        stacked_by = stacks_workers(deployment)
        stacks, members, verified = stacks_after(deployment, monkeypatch)
    assert {r["status"] for r in done} == {"SUCCESS"}, done
    survivor = ({"worker1", "worker2"} - {victim}).pop()
    assert stacked_by == [victim, survivor]  # the step began again on the other worker
    assert sorted(s.status for s in stacks) == ["stacked"] * 2  # one target, two filters
    assert len(members) == len(set(members))  # no member recorded twice by the step run twice
    assert verified == 0  # every stored file matches its catalog checksum, none is missing
    assert not list(deployment.home.scratch.rglob("*.fits"))


def test_a_run_worker_killed_in_the_middle_of_a_stack_is_re_executed_from_the_failure(
    tmp_path, postgres, wide_night, monkeypatch
):
    import os

    with ProductionDeployment(tmp_path, postgres) as deployment:
        deliver(wide_night.frames, deployment.home.landing)
        pid = wait_for(lambda: run_worker_in_stacks(deployment), 600, "the stacks step", deployment, 0.05)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: materialized(deployment, "archive_records"), 600, "archive records", deployment)
        done = wait_for(lambda: settled(deployment), 300, "the end of the runs", deployment)
        steps = instance_events(deployment, "dagster_event_type = 'STEP_START'")
        stacks, members, verified = stacks_after(deployment, monkeypatch)
    statuses = sorted(r["status"] for r in done)
    retries = [
        r for r in done if {t["key"]: t["value"] for t in r["tags"]}.get("dagster/retry_number") == "1"
    ]
    assert "FAILURE" in statuses and len(retries) == 1 and retries[0]["status"] == "SUCCESS", done
    # From the failure: the retry starts at the stacks, not at the raw frames again.
    retry_steps = {m.group(1) for run_id, event in steps if run_id == retries[0]["runId"]
                   for m in re.finditer(r"execution of step \\?\"(\w+)", event)}  # fmt: skip
    assert retry_steps and "raw_frames" not in retry_steps and "stacks" in retry_steps, retry_steps
    assert sorted(s.status for s in stacks) == ["stacked"] * 2
    assert len(members) == len(set(members))
    assert verified == 0
    assert not list(deployment.home.scratch.rglob("*.fits"))


def terminate_connections_of(deployment, process_name: str) -> int:
    """Terminate (``pg_terminate_backend``) every PostgreSQL connection that the deployment's
    ``process_name`` holds, found by its client ports; the shared server itself keeps running."""
    import psutil
    from sqlalchemy import create_engine, text

    pid = deployment.processes[process_name].pid
    ports = {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == 5432
    }
    if not ports:
        return 0
    admin = create_engine(deployment.postgres.render_as_string(hide_password=False))
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where client_port = any(:ports) and datname = any(:databases)"
                    ),
                    {"ports": sorted(ports), "databases": list(deployment.databases.values())},
                ).all()
            )
    finally:
        admin.dispose()


TICKS = """{ sensorOrError(sensorSelector: {repositoryName: "__repository__", repositoryLocationName:
  "reduction_assets", sensorName: "landing_sensor"}) { ... on Sensor { sensorState { status
  ticks(limit: 200) { status } } } } }"""


def test_two_overlapping_backfills_of_the_same_night_make_everything_once(
    tmp_path, postgres, lcosim_night, capsys, monkeypatch
):
    with ProductionDeployment(tmp_path, postgres) as deployment:
        monkeypatch.setenv("REDUCTION_CATALOG_URL", deployment.catalog_url)
        deployment.stop_sensors()
        deliver(lcosim_night.frames, deployment.home.landing)
        # Two operators backfill the same night at once (`reduction-assets backfill`: one run of the
        # whole graph each); production's limits let both runs go at the same time.
        ids = []
        for _ in range(2):
            night = NIGHT.isoformat()
            argv = ["--home", str(deployment.home.root), "backfill", night, night, "--instrument", "lcosim"]
            assert main([*argv, "--url", deployment.url]) == 0
            ids.append(re.search(r"backfill (\S+):", capsys.readouterr().out).group(1))
        first, second = ids
        statuses = [deployment.wait_for_backfill(b, timeout=900) for b in (first, second)]
        catalog = Catalog(deployment.catalog_url)
        with catalog.session() as session:
            raw = session.scalars(select(RawFrame.checksum)).all()
            raw_names = session.scalars(select(RawFrame.store_path)).all()
            masters = session.execute(select(Calibration.path, Calibration.bad)).all()
            products = session.scalars(select(Product.path)).all()
            stacks = session.scalars(select(Stack.path).where(Stack.status == "stacked")).all()
            records = session.execute(select(ArchiveRecord.name, ArchiveRecord.version)).all()
        catalog.dispose()
    assert statuses == ["COMPLETED_SUCCESS", "COMPLETED_SUCCESS"], statuses
    assert len(raw) == len(set(raw)) == 32
    assert len(masters) == len({path for path, _ in masters}) == 4
    files = [path for path in products if path]
    assert len(products) == 12 and len(files) == len(set(files))  # one row per science frame
    assert len(stacks) == len(set(stacks)) == 4
    assert {version for _, version in records} == {1}  # nothing archived twice
    archived = {name for name, _ in records}
    # (A frame the later run found not reducible has no file: nothing of it to archive.)
    expected = {Path(p).name for p in raw_names + [p for p, _ in masters] + products + stacks if p}
    assert len(records) == len(archived) and archived == expected, expected ^ archived


def test_a_wrong_instance_database_is_one_clear_line_without_the_password(tmp_path, postgres):
    import os
    import subprocess
    import sys

    home = Home(tmp_path / "home")
    (home.root / "dagster").mkdir(parents=True)
    (home.root / "dagster" / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": "no_such_instance_database",
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "s3cret-pw",
        "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path / "logs"),
        "REDUCTION_DEPLOYMENT": "production",
        "REDUCTION_CATALOG_URL": postgres,
    }
    done = subprocess.run(
        [sys.executable, "-m", "reduction_assets.cli", "--home", str(home.root), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "s3cret-pw" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"status: cannot open the Dagster instance in {home.dagster}: connection to server at "
        '"127.0.0.1", port 5432 failed: FATAL:  database "no_such_instance_database" does not exist'
    ]


RUN = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""
FAILURE_MESSAGES = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on RunFailureEvent { message error { message } }
  ... on EngineEvent { message error { message } } } } } }"""
RETRIES = """query($parent: String!) { runsOrError(filter: {tags: [{key: "dagster/parent_run_id",
  value: $parent}]}) { ... on Runs { results { runId tags { key value } } } } }"""


def test_an_unreachable_broker_fails_the_run_with_one_clear_line_and_the_daemon_retries_it(
    tmp_path, postgres, lcosim_night
):
    from reduction_assets_tests.deployment import free_port

    closed = f"amqp://reduction:s3cret-pw@127.0.0.1:{free_port()}//"  # nothing listens there
    env = {"REDUCTION_EXECUTOR": "celery", "REDUCTION_CELERY_BROKER_URL": closed}
    with ProductionDeployment(tmp_path, postgres, env=env) as deployment:
        deployment.stop_sensors()
        deliver(lcosim_night.frames, deployment.home.landing)
        run_id = deployment.client.launch_run("process_night", {"dagster/partition": KEY})

        def ended():
            status = deployment.graphql(RUN, {"runId": run_id})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = wait_for(ended, 300, "the end of the run", deployment)
        events = deployment.graphql(FAILURE_MESSAGES, {"runId": run_id})["logsForRun"]["events"]
        messages = "\n".join(
            f"{e.get('message') or ''} {(e.get('error') or {}).get('message') or ''}" for e in events
        )
        retried = wait_for(
            lambda: deployment.graphql(RETRIES, {"parent": run_id})["runsOrError"]["results"],
            300,
            "the daemon's retry of the run",
            deployment,
        )
        log = deployment.log_tail(200000)
    assert status == "FAILURE"
    assert (
        f"the Celery broker amqp://reduction:**@127.0.0.1:{closed.split(':')[-1]} is unreachable" in messages
    )
    assert "s3cret-pw" not in messages + log
    assert {t["key"]: t["value"] for t in retried[0]["tags"]}["dagster/retry_number"] == "1"


def test_a_night_in_landing_becomes_archive_records_on_the_production_topology_despite_dropped_connections(
    tmp_path, postgres, lcosim_night
):
    with ProductionDeployment(tmp_path, postgres) as deployment:
        deliver(lcosim_night.frames, deployment.home.landing)
        # The first ticks lose their database connections (the server itself keeps running).
        terminated, until = 0, time.monotonic() + 25  # two or three landing-sensor ticks
        while time.monotonic() < until:
            terminated += terminate_connections_of(deployment, "code_server")
            time.sleep(0.02)
        wait_for(lambda: materialized(deployment, "archive_records"), 600, "archive records", deployment)
        done = wait_for(lambda: settled(deployment), 300, "the end of the runs", deployment)
        for asset in ("raw_frames", "master_bias", "master_dark", "master_flat", "reduced_frames", "stacks"):
            assert materialized(deployment, asset), asset
        state = deployment.graphql(TICKS)["sensorOrError"]["sensorState"]
        counts = catalog_counts(deployment.catalog_url)
    assert terminated > 0
    # The newest tick may still be running (STARTED) when it is read: the newest finished one counts.
    finished = [tick["status"] for tick in state["ticks"] if tick["status"] != "STARTED"]
    assert state["status"] == "RUNNING" and finished[0] in ("SUCCESS", "SKIPPED")
    assert {r["status"] for r in done} == {"SUCCESS"}, done
    assert counts["masters"] == 4 and counts["reduced"] == 12 and counts["archive"] > 0, counts
