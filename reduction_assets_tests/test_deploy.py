"""deploy/: the files are consistent with each other, and the production topology (a code server, the
webserver and the daemon on PostgreSQL, found through the environment) starts as local processes."""

import configparser
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from reduction_assets_tests.catalog_fixtures import POSTGRES_URL, postgres_available
from reduction_assets_tests.conftest import require
from reduction_assets_tests.deployment import BIN, free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SERVICES = ["reduction-code-server", "reduction-webserver", "reduction-daemon"]


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = line.split("=", 1)
            values[key] = value.strip()
    return values


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd" / name)
    return parser


def test_every_variable_the_deploy_files_read_is_in_env_example():
    wanted = set()
    for name in ("dagster.yaml", "workspace.yaml"):
        wanted |= set(re.findall(r"\{env: ([A-Z_]+)\}", (DEPLOY / name).read_text()))
    assert wanted and wanted <= set(env_example()), wanted - set(env_example())
    assert env_example()["DAGSTER_HOME"] == env_example()["REDUCTION_HOME"] + "/dagster"


def test_services_run_in_the_foreground_and_are_stopped_as_a_group():
    for name in SERVICES:
        service = unit(f"{name}.service")["Service"]
        assert service["ExecStart"].startswith("/") and "&" not in service["ExecStart"], name
        assert service["KillMode"] == "control-group" and service["EnvironmentFile"], name
        assert service["Restart"] == "on-failure", name
    for name in ("reduction-webserver", "reduction-daemon"):
        assert "reduction-code-server.service" in unit(f"{name}.service")["Unit"]["After"]
    assert "deploy/workspace.yaml" in unit("reduction-daemon.service")["Service"]["ExecStart"]


@pytest.mark.slow
@pytest.mark.postgres
def test_the_production_topology_starts_with_the_code_server_found_through_the_environment(tmp_path):
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    db = f"dagster_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{db}"'))
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    grpc_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home / "dagster"),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": db,
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_COMPUTE_LOG_DIR": str(home / "dagster" / "compute_logs"),
        "DAGSTER_GRPC_HOST": "127.0.0.1",
        "DAGSTER_GRPC_PORT": str(grpc_port),
        "REDUCTION_CODE_SERVER_HOST": "127.0.0.1",
        "REDUCTION_HOME": str(home),
        "REDUCTION_DEPLOYMENT": "production",
        "REDUCTION_CATALOG_URL": POSTGRES_URL,
    }
    commands = [
        [str(BIN / "dagster"), "api", "grpc", "-m", "reduction_assets.definitions", "-a", "defs"],
        [str(BIN / "dagster-daemon"), "run", "-w", str(DEPLOY / "workspace.yaml")],
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(DEPLOY / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(web_port),
        ],
    ]
    log = tmp_path / "topology.log"
    processes = []
    try:
        with log.open("ab") as out:
            for command in commands:  # in the runbook's order
                processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        cwd=tmp_path,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                time.sleep(2)
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        deadline, entries = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                response = requests.post(
                    f"http://127.0.0.1:{web_port}/graphql", json={"query": query}, timeout=5
                )
                entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]:
                    break
            except (requests.RequestException, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert entries == [
            {"name": "reduction_assets", "locationOrLoadError": {"__typename": "RepositoryLocation"}}
        ], log.read_text()[-3000:]
        deadline = time.monotonic() + 90
        while True:
            liveness = subprocess.run(
                [str(BIN / "dagster-daemon"), "liveness-check"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if liveness.returncode == 0 or time.monotonic() >= deadline:
                break
            time.sleep(3)
        assert liveness.returncode == 0, liveness.stdout + liveness.stderr
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with admin.connect() as connection:
            connection.execute(text(f'drop database "{db}" with (force)'))
        admin.dispose()


@pytest.mark.parametrize("path", ["deploy/dagster.yaml", "reduction_assets/defaults/dagster.yaml"])
def test_backfill_runs_are_throttled_below_the_run_limit(path):
    import yaml

    runs = yaml.safe_load((ROOT / path).read_text())["concurrency"]["runs"]
    (limit,) = [entry for entry in runs["tag_concurrency_limits"] if entry["key"] == "dagster/backfill"]
    assert "value" not in limit and 1 <= limit["limit"] < runs["max_concurrent_runs"]
