"""`reduction-assets reprocess` without a daemon (plans, refusals, --local) and the landing routes that
let a run of a few partitions find their files without opening every header in landing/."""

from __future__ import annotations

import json

import pytest

from reduction_assets.orchestration.process import instance_for
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT, deliver
from reduction_assets_tests.runs import copy_of, metadata, processed_home, run_asset
from reduction_assets_tests.test_cli import cli


@pytest.fixture(scope="module")
def processed(tmp_path_factory, lcosim_night):
    """The lcosim night through `process` once; each test works on a copy."""
    return processed_home(tmp_path_factory.mktemp("reprocess"), lcosim_night)


@pytest.fixture
def night(processed, tmp_path) -> Home:
    return copy_of(processed, tmp_path)


def run_count(home: Home) -> int:
    instance = instance_for(home)
    try:
        return len(instance.get_runs())
    finally:
        instance.dispose()


def test_a_dry_run_plans_the_nights_with_data_and_launches_nothing(night, capsys):
    before = run_count(night)
    code, out = cli(
        capsys, "--home", str(night.root), "reprocess", "2026-11-01", "2026-11-30", "--dry-run", "--json"
    )
    plan = json.loads(out)
    assert code == 0 and plan["dry_run"] is True
    assert plan["spans"] == [
        {"instrument": "lcosim", "first": "2026-11-20", "last": "2026-11-20", "nights_with_data": 1}
    ]
    assert plan["daemon_runs"] == 1 and plan["assets"][0] == "raw_frames"
    assert run_count(night) == before


def test_a_range_without_data_says_so_and_launches_nothing(night, capsys):
    before = run_count(night)
    code, out = cli(capsys, "--home", str(night.root), "reprocess", "2026-10-01", "2026-10-31", "--local")
    assert code == 2 and "no data from 2026-10-01 to 2026-10-31" in out and "nothing launched" in out
    assert run_count(night) == before


def test_unknown_instruments_and_assets_are_refused_with_the_valid_names(night, capsys):
    code, out = cli(capsys, "--home", str(night.root), "reprocess", "2026-11-20", "--instrument", "hubble")
    assert code == 2 and "unknown instrument 'hubble'; valid: lcosim, noirsim, st7" in out
    code, out = cli(
        capsys, "--home", str(night.root), "reprocess", "2026-11-20", "--assets", "reduced_frames,stackz"
    )
    assert code == 2 and "unknown asset 'stackz'" in out
    assert (
        "valid: raw_frames, master_bias, master_dark, master_flat, reduced_frames, stacks, archive_records"
        in out
    )
    code, out = cli(capsys, "--home", str(night.root), "reprocess", "2026-11-21", "2026-11-20", "--dry-run")
    assert code == 2 and "before START" in out


def test_local_reprocessing_runs_the_selected_assets_on_the_instance(night, capsys):
    code, out = cli(
        capsys, "--home", str(night.root), "reprocess", "2026-11-19", "2026-11-21",
        "--assets", "stacks,reduced_frames", "--local", "--json",
    )  # fmt: skip
    document = json.loads(out[: out.index("\n[stderr]")] if "[stderr]" in out else out)
    assert code == 0 and [r["partition"] for r in document["runs"]] == ["lcosim|2026-11-20"]
    instance = instance_for(night)
    try:
        (latest,) = instance.get_runs(limit=1)
        assert (
            latest.job_name == "reprocess_nights" and latest.tags["reduction_assets/trigger"] == "reprocess"
        )
        materialized = {
            record.asset_key.path[-1]
            for record in instance.get_records_for_run(latest.run_id).records
            if record.event_log_entry.dagster_event
            and record.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
    finally:
        instance.dispose()
    assert materialized == {"reduced_frames", "stacks"}


def test_a_partition_run_opens_only_the_headers_it_has_not_routed_before(
    home, lcosim_night, noirsim_night, monkeypatch
):
    import reduction_assets.tasks.landing as landing

    deliver(lcosim_night.frames, home.landing)
    deliver(noirsim_night.frames, home.landing)
    opened: list[str] = []
    read = landing.read_primary_header

    def counting(path):
        opened.append(path.name)
        return read(path)

    monkeypatch.setattr(landing, "read_primary_header", counting)
    first = run_asset(home, "raw_frames", instrument="lcosim")
    assert first.success and metadata(first, "raw_frames")["ingested"].value == 32
    assert len(opened) == 64  # every landing file routed once
    opened.clear()
    second = run_asset(home, "raw_frames", instrument="noirsim")
    assert second.success and metadata(second, "raw_frames")["ingested"].value == len(noirsim_night.frames)
    assert opened == []  # the routes were remembered
    # A file that changes is routed again; one that goes is forgotten.
    changed = home.landing / lcosim_night.frames[0].name
    changed.touch()
    (home.landing / noirsim_night.frames[0].name).unlink()
    assert run_asset(home, "raw_frames", instrument="lcosim", night=NIGHT).success
    assert opened == [changed.name]
