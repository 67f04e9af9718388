"""Talking to a running Dagster webserver over GraphQL: backfills (which `DagsterGraphQLClient` has no
method for), runs and re-executions, as the UI launches them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests

from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.partitions import partition_key

WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"
LOCATION = "reduction_assets"  # the code location's name, in development and production alike
REPOSITORY = "__repository__"
BACKFILL_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


class WebserverError(RuntimeError):
    """The webserver cannot be reached or refused the request (one line, no credentials)."""


def webserver_url(url: str | None = None) -> str:
    return (url or os.environ.get(WEBSERVER_URL_ENV) or DEFAULT_WEBSERVER_URL).rstrip("/")


def shown_url(url: str) -> str:
    """The URL without any user name or password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class NightRange:
    """Nights ``first``..``last`` (ISO dates) of one instrument: one contiguous partition range."""

    instrument: str
    first: str
    last: str

    def keys(self) -> tuple[str, str]:
        return str(partition_key(self.instrument, self.first)), str(partition_key(self.instrument, self.last))


class WebserverClient:
    def __init__(self, url: str | None = None, timeout: float = 120.0):
        self.url = webserver_url(url)
        self.timeout = timeout

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        try:
            response = requests.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables or {}},
                timeout=self.timeout,
            )
            response.raise_for_status()
            body = response.json()
        except requests.RequestException as err:
            where = shown_url(self.url)
            raise WebserverError(
                f"the Dagster webserver at {where} cannot be used: {type(err).__name__}"
            ) from err
        except ValueError as err:
            where = shown_url(self.url)
            raise WebserverError(
                f"{where}/graphql did not answer with JSON: is it a Dagster webserver?"
            ) from err
        if body.get("errors"):
            raise WebserverError(
                f"GraphQL errors: {'; '.join(e.get('message', '?') for e in body['errors'])}"
            )
        return body["data"]

    def launch_backfill(
        self, ranges: list[NightRange], assets: tuple[str, ...] = NIGHT_ASSETS, title: str | None = None
    ) -> str:
        """Launch a daemon-managed asset backfill of exactly these nights for each asset; returns its id.

        Unlike the UI's asset dialog (partitions of the first assets, then every later partition that
        depends on them through the calibration window: up to two weeks more), the ranges are the same
        for every asset, so that one run per instrument and up to 31 nights does all of them.
        """
        params = {
            "partitionsByAssets": [
                {
                    "assetKey": {"path": [asset]},
                    "partitions": {"ranges": [{"start": r.keys()[0], "end": r.keys()[1]} for r in ranges]},
                }
                for asset in assets
            ],
            "tags": [{"key": "reduction_assets/trigger", "value": "backfill_command"}],
        }
        if title:
            params["title"] = title
        data = self.graphql(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                 __typename ... on LaunchBackfillSuccess { backfillId }
                 ... on PythonError { message } ... on InvalidSubsetError { message }
                 ... on UnauthorizedError { message } } }""",
            {"params": params},
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise WebserverError(f"backfill refused ({data['__typename']}): {data.get('message', '')[:500]}")
        return data["backfillId"]

    def backfill_status(self, backfill_id: str) -> dict:
        """``status``, ``numPartitions`` and the ids of its runs so far."""
        data = self.graphql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 __typename
                 ... on PartitionBackfill { status numPartitions runs(limit: 1000) { runId status } }
                 ... on PythonError { message } ... on BackfillNotFoundError { message } } }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise WebserverError(f"backfill {backfill_id}: {data.get('message', data['__typename'])}")
        return data

    def launch_run(self, job_name: str, tags: dict[str, str], run_config: dict | None = None) -> str:
        """Launch a run of a job with only these tags (what ``DagsterGraphQLClient.submit_job_execution``
        sends for a partition: the ``dagster/partition`` tag); returns the run id."""
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": job_name,
                    },
                    "runConfigData": run_config or {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
            },
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise WebserverError(f"launchRun refused ({data['__typename']}): {str(data)[:500]}")
        return data["run"]["runId"]

    def reexecute(self, run_id: str, strategy: str = "ALL_STEPS") -> str:
        """Re-execute a run (``ALL_STEPS`` or ``FROM_FAILURE``), as the UI's button does."""
        data = self.graphql(
            """mutation($params: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {"params": {"parentRunId": run_id, "strategy": strategy}},
        )["launchRunReexecution"]
        if data["__typename"] != "LaunchRunSuccess":
            raise WebserverError(f"re-execution refused ({data['__typename']}): {str(data)[:500]}")
        return data["run"]["runId"]
