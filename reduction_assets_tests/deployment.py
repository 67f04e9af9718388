"""A deployment as operators run it, as local processes: `dagster-webserver` and `dagster-daemon` on a
REDUCTION_HOME, the code location loaded from the package, GraphQL over HTTP. For the slow tests and
the backfill benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import requests
import yaml
from dagster import DagsterInstance

from reduction_assets.orchestration.webserver import BACKFILL_DONE, LOCATION, WebserverClient, WebserverError
from reduction_assets.support.home import Home

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_workspace(folder: Path) -> Path:
    workspace = folder / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: reduction_assets.orchestration.definitions\n"
        "      attribute: defs\n"
        f"      location_name: {LOCATION}\n"
    )
    return workspace


class Deployment:
    """What both deployments share: the webserver's GraphQL API (``self.graphql``, ``self.client``),
    the Dagster CLI in the deployment's environment (``self.env``, ``self.cwd``, ``self.workspace``)
    and the processes' log (``self.logs``)."""

    def dagster(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "dagster"), *argv],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop_sensors(self) -> None:
        """Stop the sensors that launch runs (`dagster sensor stop`), for tests that launch every run
        themselves (the alert sensors launch none)."""
        for name in ("landing_sensor", "calibration_sensor", "quality_trends_sensor"):
            done = self.dagster("sensor", "stop", name, "-w", str(self.workspace))
            if done.returncode != 0 and "already" not in done.stdout + done.stderr:
                raise RuntimeError(f"dagster sensor stop {name}: {done.stderr[-2000:]}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.logs.read_text(errors="replace")[-chars:] if self.logs.exists() else ""

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        return any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                   for e in entries)  # fmt: skip

    def launch_backfill(self, assets: Iterable[str], partitions: list[str]) -> str:
        """An asset backfill as the UI's asset dialog launches it (``partitionNames``): the
        partitions of the first assets and every later one that depends on them."""
        data = self.graphql(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                 __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {"params": {"partitionNames": partitions, "assetSelection": [{"path": [a]} for a in assets]}},
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill refused: {data}")
        return data["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout: float = 3600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.backfill_status(backfill_id)["status"]
            if status in BACKFILL_DONE:
                return status
            time.sleep(1.0)
        raise TimeoutError(f"backfill {backfill_id} still running after {timeout:.0f} s")


class LocalDeployment(Deployment):
    """Webserver and daemon on ``home`` (sensors stopped first unless ``sensors`` is true).

    ``pythonpath`` puts another checkout of the package first (the benchmark's "before" numbers).
    """

    def __init__(
        self,
        home: Home,
        *,
        sensors: bool = False,
        pythonpath: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.home = home.ensure()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = WebserverClient(self.url)
        self.graphql = self.client.graphql
        self.workspace = write_workspace(home.state)
        self.cwd = home.root
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(home.dagster),
            "REDUCTION_HOME": str(home.root),
            "REDUCTION_DEPLOYMENT": "embedded",
            **(env or {}),
        }
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath
        self.sensors = sensors
        self.processes: list[subprocess.Popen] = []
        self.logs = home.state / "deployment.log"

    def _start(self, *argv: str) -> subprocess.Popen:
        # Started outside any checkout, so that the package comes from the environment (or PYTHONPATH);
        # the child keeps its own descriptor of the log.
        with self.logs.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.home.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def __enter__(self) -> LocalDeployment:
        if not self.sensors:
            self.stop_sensors()
        else:
            # The instance's SQLite storages are created (and stamped by alembic) here, once: the
            # webserver, the daemon and their code servers creating them at the same moment can stamp
            # two heads, and then none of them loads ("more than one head present").
            DagsterInstance.from_config(str(self.home.dagster)).dispose()
        self._start(
            str(BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)
        )
        self._start(str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/server_info", timeout=2).ok and self._location_loaded():
                    return self
            except (requests.RequestException, WebserverError):
                pass
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(
            f"the webserver did not come up; see {self.logs}:\n{self.logs.read_text()[-3000:]}"
        )

    def __exit__(self, *exc) -> None:
        # Both ignore SIGTERM unless it reaches their whole process group (their code servers too).
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


class ProductionDeployment(Deployment):
    """The production topology as local processes, as docs/deployment.md starts it: `dagster api
    grpc` (the code server), `dagster-daemon` and `dagster-webserver` with deploy/workspace.yaml and
    deploy/dagster.yaml (run monitoring polling every 5 s), the instance and the catalog each in a
    PostgreSQL database of their own (created here, dropped on exit), and ``workers`` Celery worker
    processes when ``env`` chooses ``REDUCTION_EXECUTOR=celery``. Sensors run as they do in
    production."""

    def __init__(self, root: Path, postgres_url: str, *, workers: int = 0, env: dict[str, str] | None = None):
        from sqlalchemy.engine import make_url

        self.root = self.cwd = root
        self.home = Home(root / "home")
        self.workspace = DEPLOY / "workspace.yaml"
        self.postgres = make_url(postgres_url)
        tag = os.urandom(5).hex()
        self.databases = {"instance": f"dagster_{tag}", "catalog": f"catalog_{tag}"}
        self.catalog_url = self.postgres.set(database=self.databases["catalog"]).render_as_string(
            hide_password=False
        )
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = WebserverClient(self.url)
        self.graphql = self.client.graphql
        self.logs = root / "topology.log"
        self.workers = workers
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home.dagster),
            "DAGSTER_PG_HOST": self.postgres.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.postgres.port or 5432),
            "DAGSTER_PG_DB": self.databases["instance"],
            "DAGSTER_PG_USERNAME": self.postgres.username or "postgres",
            "DAGSTER_PG_PASSWORD": self.postgres.password or "",
            "DAGSTER_COMPUTE_LOG_DIR": str(self.home.dagster / "compute_logs"),
            "DAGSTER_GRPC_HOST": "127.0.0.1",
            "DAGSTER_GRPC_PORT": str(self.grpc_port),
            "REDUCTION_CODE_SERVER_HOST": "127.0.0.1",
            "REDUCTION_HOME": str(self.home.root),
            "REDUCTION_DEPLOYMENT": "production",
            "REDUCTION_CATALOG_URL": self.catalog_url,
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def _admin(self, statement: str) -> None:
        from sqlalchemy import create_engine, text

        admin = create_engine(
            self.postgres.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin.connect() as connection:
                connection.execute(text(statement))
        finally:
            admin.dispose()

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        with self.logs.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.start(
            name,
            str(BIN / "celery"),
            "-A",
            "reduction_assets.orchestration.executors",
            "worker",
            "-Q",
            "dagster",
            "--pool=threads",
            "--concurrency=1",
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
        )

    def __enter__(self) -> ProductionDeployment:
        for database in self.databases.values():
            self._admin(f'create database "{database}"')
        self.home.ensure()
        # deploy/dagster.yaml as shipped, but run monitoring looks every 5 s instead of 30: a killed
        # run worker is noticed sooner, and the tests wait less for the daemon's retry.
        instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
        instance["run_monitoring"]["poll_interval_seconds"] = 5
        (self.home.dagster / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        workspace = str(self.workspace)
        try:
            # In the runbook's order: code server, then daemon and webserver, then workers.
            code_server = ["api", "grpc", "-m", "reduction_assets.orchestration.definitions", "-a", "defs"]
            self.start("code_server", str(BIN / "dagster"), *code_server)
            time.sleep(2)
            self.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", workspace)
            self.start("webserver", str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                       "-p", str(self.port))  # fmt: skip
            for index in range(self.workers):
                self.start_worker(f"worker{index + 1}")
            self._wait_until_loaded()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_loaded(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if self._location_loaded():
                    return
            except (requests.RequestException, WebserverError, KeyError, TypeError):
                pass
            if any(p.poll() is not None for p in self.processes.values()):
                break
            time.sleep(1.0)
        raise RuntimeError(f"the production topology did not come up:\n{self.log_tail()}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __exit__(self, *exc) -> None:
        for name in list(self.processes):
            self.stop(name)
        for database in self.databases.values():
            with contextlib.suppress(Exception):  # a database not created or already gone
                self._admin(f'drop database if exists "{database}" with (force)')


def wait_for(
    predicate, timeout: float = 240.0, what: str = "the condition", deployment=None, step: float = 0.5
):
    """``predicate()`` once it is truthy; fails after ``timeout`` seconds with the deployment's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    log = deployment.log_tail() if deployment is not None else ""
    raise AssertionError(f"{what} not reached in {timeout:.0f} s; log:\n{log}")
