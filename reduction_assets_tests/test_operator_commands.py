"""Operator commands (`mark`, `calibrations`, `requeue`, `audit`): each is recorded in the audit trail
and the partitions it concerns go back through the graph by themselves (here through `process`,
which evaluates the calibration sensor's logic and executes its runs on the home's real instance)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from reduction_assets.catalog import Calibration, Catalog, Product, RawFrame
from reduction_assets.catalog.models import OperatorAction, Rework, Stack
from reduction_assets.orchestration.process import instance_for, process_landing
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT, frames_of
from reduction_assets_tests.runs import copy_of, processed_home
from reduction_assets_tests.test_cli import cli

SCIENCE = "lcosim_20261120_0021_science.fits"
BIAS = "lcosim_20261120_0002_bias.fits"


@pytest.fixture(scope="module")
def processed(tmp_path_factory, lcosim_night):
    """The lcosim night through `process` once; each test works on a copy."""
    return processed_home(tmp_path_factory.mktemp("operator"), lcosim_night)


@pytest.fixture
def night(processed, tmp_path) -> Home:
    return copy_of(processed, tmp_path)


def run(home: Home) -> list[dict]:
    """What the daemon's sensors would do next, done now; returns the runs."""
    outcome = process_landing(home, settle_seconds=0, echo=lambda line: None)
    assert not outcome.failed
    return outcome.runs


def progress_row(capsys, home: Home) -> dict:
    capsys.readouterr()  # the runs' logs
    code, out = cli(
        capsys, "--home", str(home.root), "progress", NIGHT.isoformat(), "--instrument", "lcosim", "--json"
    )
    assert code == 0
    return json.loads(out)[0]


def query(home: Home, statement):
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            return session.execute(statement).all()
    finally:
        catalog.dispose()


def test_a_frame_marked_bad_leaves_the_night_and_the_audit_trail_says_who_and_why(night, capsys):
    code, out = cli(
        capsys,
        "--home",
        str(night.root),
        "mark",
        SCIENCE,
        "bad",
        "--reason",
        "satellite trail",
        "--operator",
        "ana",
    )
    assert code == 0 and "lcosim|2026-11-20" in out
    runs = run(night)
    assert [r["partition"] for r in runs] == ["lcosim|2026-11-20"]
    row = progress_row(capsys, night)
    assert (row["reduced"], row["marked_bad"]) == (11, 1)
    members = dict(query(night, select(Stack.group_key, Stack.n_members)))
    assert members["NGC 253 field|gp|1x1"] == 2 and sum(members.values()) == 11  # of 3 and 12
    (action,) = query(night, select(OperatorAction.operator, OperatorAction.action, OperatorAction.reason))
    assert tuple(action) == ("ana", "mark_bad", "satellite trail")
    assert query(night, select(Rework.done_at.is_not(None))) == [(True,)]
    # Nothing more to do: the next pass runs nothing.
    assert run(night) == []


def test_a_frame_marked_good_again_comes_back(night, capsys):
    cli(capsys, "--home", str(night.root), "mark", SCIENCE, "bad", "--reason", "trail")
    run(night)
    code, _ = cli(
        capsys, "--home", str(night.root), "mark", SCIENCE, "good", "--reason", "trail was elsewhere"
    )
    assert code == 0
    run(night)
    row = progress_row(capsys, night)
    assert (row["reduced"], row["marked_bad"], row["stacked"]) == (12, 0, 4)


def test_a_bias_marked_bad_rebuilds_the_master_without_it_and_redoes_the_frames(night, capsys):
    before = dict(query(night, select(Product.id, Product.checksum)))
    (bias_before,) = query(
        night, select(Calibration.checksum, Calibration.input_count).where(Calibration.type == "bias")
    )
    code, _ = cli(capsys, "--home", str(night.root), "mark", BIAS, "bad", "--reason", "light leak")
    assert code == 0
    run(night)
    (bias_after,) = query(
        night, select(Calibration.checksum, Calibration.input_count).where(Calibration.type == "bias")
    )
    assert bias_before[1] == 5 and bias_after[1] == 4 and bias_after[0] != bias_before[0]
    after = dict(query(night, select(Product.id, Product.checksum)))
    assert all(after[i] != before[i] for i in before)  # every frame reduced again with the new bias


def test_a_frame_is_found_by_its_catalog_id(night, capsys):
    ((frame_id,),) = query(night, select(RawFrame.id).where(RawFrame.original_name == SCIENCE))
    code, out = cli(capsys, "--home", str(night.root), "mark", str(frame_id), "bad", "--reason", "focus")
    assert code == 0 and SCIENCE in out


def test_marking_a_frame_that_does_not_exist_applies_nothing(night, capsys):
    code, out = cli(capsys, "--home", str(night.root), "mark", SCIENCE, "nosuch.fits", "bad", "--reason", "x")
    assert code == 2 and "no raw frame arrived as 'nosuch.fits'" in out and "nothing was marked" in out
    assert query(night, select(RawFrame.id).where(RawFrame.bad.is_(True))) == []
    assert query(night, select(OperatorAction.id)) == []


def test_mark_needs_a_verdict_and_a_reason(night, capsys):
    assert cli(capsys, "--home", str(night.root), "mark", SCIENCE, "--reason", "x")[0] == 2
    code, out = cli(capsys, "--home", str(night.root), "mark", SCIENCE, "bad")
    assert code == 2 and "--reason is required" in out


def test_a_junk_list_marks_every_frame_it_names(night, capsys, tmp_path):
    junk = tmp_path / "junk.csv"
    junk.write_text(f"frame,reason,state\n{SCIENCE},clouds,bad\n{BIAS},light leak,\n")
    code, out = cli(capsys, "--home", str(night.root), "mark", "--from-csv", str(junk), "--json")
    assert code == 0
    assert [r["target"] for r in json.loads(out)] == [SCIENCE, BIAS]
    names = {n for (n,) in query(night, select(RawFrame.original_name).where(RawFrame.bad.is_(True)))}
    assert names == {SCIENCE, BIAS}


def test_a_malformed_junk_list_names_its_lines_and_applies_nothing(night, capsys, tmp_path):
    junk = tmp_path / "junk.csv"
    lines = [f"{SCIENCE},clouds,bad", ",no frame,bad", f"{BIAS},leak,maybe", BIAS, "nosuch.fits,x,bad"]
    junk.write_text("frame,reason,state\n" + "\n".join(lines) + "\n")
    code, out = cli(capsys, "--home", str(night.root), "mark", "--from-csv", str(junk))
    assert code == 2
    assert "line 3: no frame" in out and "line 4: state 'maybe'" in out and "line 5: 1 fields" in out
    assert query(night, select(RawFrame.id).where(RawFrame.bad.is_(True))) == []
    junk.write_text("name,why\na.fits,x\n")
    code, out = cli(capsys, "--home", str(night.root), "mark", "--from-csv", str(junk))
    assert code == 2 and "line 1" in out and "lacks frame, reason" in out
    junk.write_text(f"frame,reason\n{SCIENCE},x\nnosuch.fits,y\n")
    code, out = cli(capsys, "--home", str(night.root), "mark", "--from-csv", str(junk))
    assert code == 2 and "line 3: no raw frame arrived as 'nosuch.fits'" in out
    assert query(night, select(OperatorAction.id)) == []


def test_decertifying_the_only_bias_leaves_the_frames_not_reducible_with_the_reason(night, capsys):
    ((bias_id,),) = query(night, select(Calibration.id).where(Calibration.type == "bias"))
    code, out = cli(
        capsys, "--home", str(night.root), "calibrations", "decertify", str(bias_id), "--reason", "bias jumps"
    )
    assert code == 0 and "12 reduced frames to redo" in out
    run(night)
    row = progress_row(capsys, night)
    assert (row["reduced"], row["not_reducible"], row["stacked"], row["bias"]) == (0, 12, 0, 0)
    reasons = {r for (r,) in query(night, select(Product.reason))}
    assert len(reasons) == 1 and "decertified: bias jumps" in reasons.pop()
    code, out = cli(capsys, "--home", str(night.root), "calibrations", "list", "--type", "bias", "--json")
    assert json.loads(out)[0]["state"] == "bad"
    # Certified again: the frames are reduced and stacked again.
    code, _ = cli(
        capsys,
        "--home",
        str(night.root),
        "calibrations",
        "certify",
        str(bias_id),
        "--reason",
        "jumps were the ADC",
    )
    assert code == 0
    run(night)
    row = progress_row(capsys, night)
    assert (row["reduced"], row["not_reducible"], row["stacked"]) == (12, 0, 4)


def test_certifying_a_master_for_other_nights_takes_it_away_from_this_one(night, capsys):
    ((flat_id,),) = query(
        night, select(Calibration.id).where(Calibration.type == "flat", Calibration.filter == "gp")
    )
    code, out = cli(
        capsys, "--home", str(night.root), "calibrations", "certify", str(flat_id),
        "--begin", "2026-11-21", "--end", "2026-11-30", "--reason", "new filter installed on the 21st",
    )  # fmt: skip
    assert code == 0 and "6 reduced frames to redo" in out
    run(night)
    row = progress_row(capsys, night)
    assert (row["reduced"], row["not_reducible"]) == (6, 6)
    code, out = cli(capsys, "--home", str(night.root), "calibrations", "list", "--json")
    flat = next(r for r in json.loads(out) if r["id"] == flat_id)
    assert (flat["state"], flat["valid_from"], flat["valid_to"]) == ("certified", "2026-11-21", "2026-11-30")


def test_calibration_commands_refuse_unknown_ids_ranges_and_instruments(night, capsys):
    code, out = cli(capsys, "--home", str(night.root), "calibrations", "decertify", "999", "--reason", "x")
    assert code == 2 and "no master calibration has id 999" in out
    code, out = cli(
        capsys, "--home", str(night.root), "calibrations", "certify", "1",
        "--begin", "2026-11-22", "--end", "2026-11-21", "--reason", "x",
    )  # fmt: skip
    assert code == 2 and "before --begin" in out
    code, out = cli(capsys, "--home", str(night.root), "calibrations", "list", "--instrument", "hubble")
    assert code == 2 and "known: lcosim, noirsim, st7" in out
    assert query(night, select(OperatorAction.id)) == []


def test_requeue_redoes_a_frame_whose_fingerprint_still_matches(night, capsys):
    ((before,),) = query(
        night, select(Product.updated_at).join(RawFrame).where(RawFrame.original_name == SCIENCE)
    )
    code, _ = cli(
        capsys, "--home", str(night.root), "requeue", SCIENCE, "--reason", "check the new sky model"
    )
    assert code == 0
    runs = run(night)
    assert len(runs) == 1
    ((after,),) = query(
        night, select(Product.updated_at).join(RawFrame).where(RawFrame.original_name == SCIENCE)
    )
    assert after > before
    instance = instance_for(night)
    try:
        # The latest run of the night's assets (the quality trends are redrawn after it).
        latest = next(run for run in instance.get_runs() if run.job_name != "update_quality_trends")
        assert latest.job_name == "reduce_frames" and latest.tags["reduction_assets/trigger"] == "operator"
    finally:
        instance.dispose()


def test_requeue_of_an_unknown_file_or_a_bad_frame_applies_nothing(night, capsys):
    code, out = cli(capsys, "--home", str(night.root), "requeue", SCIENCE, "nosuch.fits")
    assert code == 2 and "'nosuch.fits' is neither a raw frame nor a file the landing sensor knows" in out
    cli(capsys, "--home", str(night.root), "mark", SCIENCE, "bad", "--reason", "trail")
    code, out = cli(capsys, "--home", str(night.root), "requeue", SCIENCE)
    assert code == 2 and "is marked bad" in out
    assert [a for (a,) in query(night, select(OperatorAction.action))] == ["mark_bad"]


def test_requeue_of_a_landing_file_that_failed_asks_for_it_again(night, capsys, lcosim_night):
    from reduction_assets.catalog.models import LandingFile

    catalog = Catalog(night.catalog_url())
    try:
        with catalog.session() as session:
            session.add(
                LandingFile(
                    name="late/retry.fits", size_bytes=1, mtime_ns=1, partition="lcosim|2026-11-20",
                    run_key="k", requested_by="landing_sensor", state="failed", attempts=4,
                )
            )  # fmt: skip
    finally:
        catalog.dispose()
    code, out = cli(capsys, "--home", str(night.root), "requeue", "late/retry.fits", "--json")
    assert code == 0 and json.loads(out)[0]["target"] == "late/retry.fits"
    assert query(night, select(LandingFile.name).where(LandingFile.name == "late/retry.fits")) == []


def test_audit_lists_actions_newest_first(night, capsys):
    cli(capsys, "--home", str(night.root), "mark", SCIENCE, "bad", "--reason", "first", "--operator", "ana")
    cli(capsys, "--home", str(night.root), "mark", SCIENCE, "good", "--reason", "second", "--operator", "bo")
    code, out = cli(capsys, "--home", str(night.root), "audit", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["operator"], r["action"], r["reason"]) for r in rows] == [
        ("bo", "mark_good", "second"),
        ("ana", "mark_bad", "first"),
    ]


def test_frames_of_the_fixture_are_what_the_tests_name(lcosim_night):
    names = {p.name for p in lcosim_night.frames}
    assert SCIENCE in names and BIAS in names and len(frames_of(lcosim_night, "bias")) == 5
