"""The operator command line: simulate, process, progress, quarantine."""

import json
import sys

import pytest

import reduction_assets
from reduction_assets.cli import main
from reduction_assets_tests.conftest import deliver, frames_of


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    # `process` points DAGSTER_HOME at the home it works on; keep that inside each test.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("REDUCTION_CATALOG_URL", raising=False)


def cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and standard output (standard error is echoed into the output after a marker)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + ("\n[stderr]\n" + captured.err if captured.err else "")


def test_simulate_writes_frames_and_truth(tmp_path, capsys):
    code, out = cli(
        capsys,
        "simulate",
        "--instrument",
        "noirsim",
        "--night",
        "2026-11-20",
        "--out",
        str(tmp_path),
        "--n-dither",
        "1",
        "--seed",
        "4",
    )
    assert code == 0 and "wrote 24 frames" in out
    assert (tmp_path / "truth.npz").exists() and len(list(tmp_path.glob("*.fits"))) == 24


def test_simulate_refuses_a_size_the_camera_cannot_read_out(tmp_path, capsys):
    code, out = cli(
        capsys,
        "simulate",
        "--instrument",
        "st7",
        "--night",
        "2026-11-20",
        "--out",
        str(tmp_path),
        "--size",
        "100x100",
    )
    assert code == 2 and "[stderr]" in out and "not a readout of st7" in out


def test_simulate_refuses_a_night_that_cannot_happen(tmp_path, capsys):
    code, out = cli(
        capsys,
        "simulate",
        "--instrument",
        "lcosim",
        "--night",
        "2026-11-20",
        "--out",
        str(tmp_path),
        "--n-flat",
        "24",
    )
    assert code == 2 and "--n-flat at most 14" in out and not list(tmp_path.glob("*.fits"))


def test_process_ingests_landing_and_progress_reports_it(home, capsys, lcosim_night):
    deliver(lcosim_night.frames, home.landing)
    (home.landing / "notes.txt").write_text("not a frame")
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    assert code == 0 and "2 runs executed, 0 failed" in out
    code, out = cli(
        capsys,
        "--home",
        str(home.root),
        "progress",
        "2026-11-19",
        "2026-11-20",
        "--instrument",
        "lcosim",
        "--all",
        "--json",
    )
    rows = json.loads(out)
    assert [r["night"] for r in rows] == ["2026-11-19", "2026-11-20"]
    assert set(rows[1]) >= {
        "night",
        "instrument",
        "raw",
        "duplicates",
        "quarantined",
        "last_raw_time",
        "masters",
        "reduced",
    }
    assert (rows[0]["raw"], rows[1]["raw"]) == (0, 32)
    assert rows[1]["masters"] == 4  # bias, dark, and a flat in each of two filters
    assert rows[1]["reduced"] == 12  # two targets x two filters x three dithers


def test_process_twice_does_nothing_the_second_time(home, capsys, lcosim_night):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")[0] == 0
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    assert code == 0 and "0 runs executed" in out


def test_process_takes_over_what_the_cursor_file_of_release_0_2_had_requested(home, capsys, lcosim_night):
    names = deliver(frames_of(lcosim_night, "bias"), home.landing)
    stamps = {
        n: f"{(home.landing / n).stat().st_size}:{(home.landing / n).stat().st_mtime_ns}" for n in names
    }
    (home.state / "landing_sensor.cursor").write_text(json.dumps({"v": 1, "requested": stamps}))
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    assert code == 0 and "0 runs executed" in out
    assert not (home.state / "landing_sensor.cursor").exists()


def test_process_exits_non_zero_when_a_run_fails(home, capsys, monkeypatch, lcosim_night):
    from reduction_assets.tasks.ingest import Ingestor

    deliver(frames_of(lcosim_night, "bias"), home.landing)
    with monkeypatch.context() as patch:
        patch.setattr(Ingestor, "ingest", lambda *args, **kwargs: 1 / 0)
        code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    assert code == 1 and "1 failed" in out
    assert len(list(home.landing.iterdir())) == 5  # nothing lost
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    assert code == 0 and "1 runs executed, 0 failed" in out  # the failed files are retried


def test_frames_left_not_reducible_are_listed_and_fail_a_strict_run(home, capsys, lcosim_night):
    no_flats = [f for f in lcosim_night.frames if "_flat" not in f.name]
    deliver(no_flats, home.landing)
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0", "--strict")
    assert code == 1 and "1 runs executed, 0 failed" in out
    assert "12 science frames are left not reducible:" in out
    assert "lcosim 2026-11-20 lcosim_20261120_0021_science.fits: no calibration matches type=flat" in out
    code, out = cli(capsys, "--home", str(home.root), "progress", "2026-11-20", "--instrument", "lcosim")
    header, _, row = out.strip().splitlines()
    assert header.split()[8:10] == ["reduced", "not_reducible"] and row.split()[8:10] == ["0", "12"]


def test_progress_table_has_a_row_per_night_and_instrument(home, capsys):
    from reduction_assets.cli.night import PROGRESS_COLUMNS

    code, out = cli(capsys, "--home", str(home.root), "progress", "2026-11-20")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split() == PROGRESS_COLUMNS
    assert PROGRESS_COLUMNS[2:13] == ["raw", "duplicates", "quarantined", "bias", "dark", "flat", "reduced",
                                      "not_reducible", "stacked", "archived", "software"]  # fmt: skip
    assert len(lines) == 2 + 3


def test_a_progress_range_lists_only_nights_with_data_unless_all(home, capsys, lcosim_night):
    deliver(lcosim_night.frames, home.landing)
    assert cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")[0] == 0
    code, out = cli(capsys, "--home", str(home.root), "progress", "2026-11-15", "2026-11-25", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["night"], r["instrument"]) for r in rows] == [("2026-11-20", "lcosim")]
    row = rows[0]
    assert (row["bias"], row["dark"], row["flat"], row["reduced"], row["stacked"]) == (1, 1, 2, 12, 4)
    assert row["archived"] == 52 and row["software"] == reduction_assets.__version__
    code, out = cli(
        capsys, "--home", str(home.root), "progress", "2026-11-15", "2026-11-25", "--all", "--json"
    )
    assert len(json.loads(out)) == 11 * 3
    code, out = cli(capsys, "--home", str(home.root), "progress", "2026-12-01", "2026-12-05")
    assert code == 0 and "no data from 2026-12-01 to 2026-12-05" in out


def test_progress_piped_into_head_exits_cleanly(home, tmp_path):
    import subprocess

    cli_command = f"{sys.executable} -m reduction_assets.cli --home {home.root}"
    command = f"{cli_command} progress 2019-01-01 2026-12-31 --all | head -3"  # ~1 MB: the pipe breaks
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (
        len(done.stdout.splitlines()) == 3
        and "Traceback" not in done.stderr
        and "BrokenPipe" not in done.stderr
    )


def test_progress_rejects_an_unknown_instrument(home, capsys):
    assert cli(capsys, "--home", str(home.root), "progress", "2026-11-20", "--instrument", "hst")[0] == 2


def test_quarantine_lists_reasons_oldest_first(home, capsys, lcosim_night):
    (home.landing / "a_empty.fits").touch()
    (home.landing / "b_text.fits").write_text("hello")
    import os

    os.utime(home.landing / "a_empty.fits", (0, 0))
    os.utime(home.landing / "b_text.fits", (0, 0))
    cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")
    code, out = cli(capsys, "--home", str(home.root), "quarantine", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["original_path"], r["reason"]) for r in rows] == [
        ("a_empty.fits", "empty_file"),
        ("b_text.fits", "not_fits"),
    ]
    assert rows[0]["quarantined_at"] <= rows[1]["quarantined_at"] and rows[0]["message"]


def test_version_names_the_release_and_dagster(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("reduction-assets 0.") and "dagster 1.13" in out


def test_home_may_follow_the_subcommand(tmp_path, capsys):
    code, _ = cli(capsys, "progress", "2026-11-20", "--home", str(tmp_path / "after"))
    assert code == 0 and (tmp_path / "after" / "catalog.sqlite").exists()
    code, _ = cli(capsys, "--home", str(tmp_path / "before"), "progress", "2026-11-20")
    assert code == 0 and (tmp_path / "before" / "catalog.sqlite").exists()


def test_process_json_reports_runs_failures_waiting_files_and_not_reducible_frames(
    home, capsys, lcosim_night
):
    no_flats = [f for f in lcosim_night.frames if "_flat" not in f.name]
    deliver(no_flats, home.landing)
    code, out = cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0", "--json")
    stdout = out.split("\n[stderr]\n")[0]
    document = json.loads(stdout)  # standard output holds the document and nothing else
    assert code == 0 and document["exit_code"] == 0
    assert document["executed"] == 1 and document["failures"] == []
    assert document["runs"][0]["partition"] == "lcosim|2026-11-20" and document["runs"][0]["success"]
    assert document["not_reducible"]["count"] == 12
    assert document["files_waiting"] == {
        "to_settle": 0,
        "for_runs_in_flight": 0,
        "for_their_night": 0,
        "for_a_retry": 0,
        "given_up": 0,
        "gave_up_waiting": 0,
    }


def test_process_exits_1_when_it_gave_up_waiting_for_files_to_settle(home, capsys, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, age_seconds=0)
    code, out = cli(
        capsys, "--home", str(home.root), "process", "--settle-seconds", "600", "--max-wait", "0.5"
    )
    assert code == 1 and "1 files were still changing" in out


def test_prune_runs_says_what_it_would_delete_and_refuses_a_zero_age(home, capsys, lcosim_night):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert cli(capsys, "--home", str(home.root), "process", "--settle-seconds", "0")[0] == 0
    code, out = cli(capsys, "--home", str(home.root), "prune-runs", "--older-than-days", "1", "--dry-run")
    assert code == 0 and "would delete 0 superseded failed runs" in out
    code, out = cli(capsys, "--home", str(home.root), "prune-runs", "--older-than-days", "0")
    assert code == 2 and "at least 1" in out
