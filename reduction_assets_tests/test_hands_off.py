"""Hands off: with a live `dagster-daemon` (and the webserver, to look through GraphQL), a night dropped
into landing/ ends as raw frames, masters, reduced frames, stacks and archive records with no click,
and an operator's `mark ... bad` flows through the graph by itself."""

from __future__ import annotations

import time

import pytest

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.reports import progress_rows
from reduction_assets.cli import main
from reduction_assets_tests.conftest import NIGHT, deliver
from reduction_assets_tests.deployment import LocalDeployment, wait_for

pytestmark = pytest.mark.slow


def night_row(home) -> dict:
    catalog = Catalog(home.catalog_url())
    catalog.check()  # creates the tables before the first run does
    try:
        with catalog.session() as session:
            return progress_rows(session, NIGHT, NIGHT, ["lcosim"])[0]
    finally:
        catalog.dispose()


RUNS = """query($trigger: String!) {
  runsOrError(filter: {tags: [{key: "reduction_assets/trigger", value: $trigger}]}) {
    ... on Runs { results { runId jobName status tags { key value } } } } }"""


def finished_runs(deployment, trigger: str) -> list[tuple[str, str]]:
    """(job, status) of the runs a trigger launched, once none is in flight (through GraphQL)."""

    def ended():
        runs = deployment.graphql(RUNS, {"trigger": trigger})["runsOrError"]["results"]
        done = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
        return done and [(r["jobName"], r["status"]) for r in runs]

    return wait_for(ended, 60, f"the end of the {trigger} runs", deployment)


def test_a_night_in_landing_becomes_archive_records_and_a_bad_mark_flows_through(home, lcosim_night):
    assert night_row(home)["raw"] == 0  # the catalog exists before the daemon starts
    with LocalDeployment(home, sensors=True) as deployment:
        dropped = time.monotonic()
        deliver(lcosim_night.frames, home.landing)
        row = wait_for(
            lambda: (r := night_row(home))["archived"] and r["stacked"] == 4 and r,
            300,
            "archive records of the night",
            deployment,
        )
        elapsed = time.monotonic() - dropped
        assert (row["raw"], row["bias"], row["dark"], row["flat"], row["reduced"]) == (32, 1, 1, 2, 12)
        assert finished_runs(deployment, "landing_sensor") == [("process_night", "SUCCESS")]
        print(f"landing to archive records: {elapsed:.0f} s")

        assert main(["--home", str(home.root), "mark", "lcosim_20261120_0021_science.fits", "bad",
                     "--reason", "satellite trail"]) == 0  # fmt: skip
        wait_for(lambda: night_row(home)["reduced"] == 11, 240, "the bad frame leaving the night", deployment)
        assert finished_runs(deployment, "operator") == [("reduce_frames", "SUCCESS")]
