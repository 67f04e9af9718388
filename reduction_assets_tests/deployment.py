"""A deployment as operators run it, as local processes: `dagster-webserver` and `dagster-daemon` on a
REDUCTION_HOME, the code location loaded from the package, GraphQL over HTTP. For the slow tests and
the backfill benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import requests

from reduction_assets.home import Home
from reduction_assets.webserver import BACKFILL_DONE, LOCATION, WebserverClient, WebserverError

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
        "      module_name: reduction_assets.definitions\n"
        "      attribute: defs\n"
        f"      location_name: {LOCATION}\n"
    )
    return workspace


class LocalDeployment:
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

    def dagster(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "dagster"), *argv],
            env=self.env,
            cwd=self.home.root,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def __enter__(self) -> LocalDeployment:
        if not self.sensors:
            for name in ("landing_sensor", "calibration_sensor"):
                done = self.dagster("sensor", "stop", name, "-w", str(self.workspace))
                if done.returncode != 0 and "already" not in done.stdout + done.stderr:
                    raise RuntimeError(f"dagster sensor stop {name}: {done.stderr[-2000:]}")
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

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        return any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                   for e in entries)  # fmt: skip

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
