"""Hands off: with a live `dagster-daemon` (and the webserver, to look through GraphQL), a night dropped
into landing/ ends as raw frames, masters, reduced frames, stacks and archive records with no click,
and an operator's `mark ... bad` flows through the graph by itself; the quality trends are redrawn and
a night with a hot-pixel storm sends a check-failure alert to a webhook."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.reports import progress_rows
from reduction_assets.cli import main
from reduction_assets.instruments import load_registry as registry
from reduction_assets.simulator.night import SimulationConfig, simulate_night, with_drifts
from reduction_assets_tests.conftest import NIGHT, deliver
from reduction_assets_tests.deployment import LocalDeployment, wait_for
from reduction_assets_tests.sinks import Webhook

pytestmark = pytest.mark.slow(seconds=110)


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

    return wait_for(ended, 180, f"the end of the {trigger} runs", deployment)


def test_a_night_becomes_archive_records_a_bad_mark_flows_through_and_a_drift_sends_an_alert(
    home, lcosim_night, tmp_path
):
    assert night_row(home)["raw"] == 0  # the catalog exists before the daemon starts
    with (
        Webhook() as webhook,
        LocalDeployment(home, sensors=True, env={"REDUCTION_ALERT_WEBHOOK_URL": webhook.url}) as deployment,
    ):
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
        # The measured nights' trends were redrawn by their sensor; the clean night raised no alert.
        assert ("update_quality_trends", "SUCCESS") in finished_runs(deployment, "quality_trends_sensor")

        # A night with a hot-pixel storm: its check fails, and the alert reaches the webhook by itself.
        stormy = dt.date(2026, 11, 21)
        config = with_drifts(SimulationConfig(seed=5, n_targets=1, n_dither=1), registry()["lcosim"],
                             ("hot-pixel-storm",))  # fmt: skip
        night = simulate_night(registry()["lcosim"], stormy, tmp_path / "stormy", config)
        deliver(night.frames, home.landing, [f"stormy/{p.name}" for p in night.frames])
        posts = wait_for(
            lambda: [p["json"] for p in webhook.received], 300, "a check-failure alert", deployment
        )
    webhook.__exit__(None, None, None)
    assert [p["details"]["check"] for p in posts] == ["hot_pixels_normal"]
    assert posts[0]["details"]["partition"] == f"lcosim|{stormy}" and posts[0]["severity"] == "warn"
    assert "hot pixels" in posts[0]["text"]
