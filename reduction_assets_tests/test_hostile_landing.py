"""No single file stops a night: hostile names, headers and file types end as reason codes.

Each case goes through the landing sensor (which must not raise) and through ingestion (which must
record a reason, or ingest the file), while the good files beside it are processed as usual.
"""

from __future__ import annotations

import gzip
import os
import stat
import threading

import numpy as np
import pytest
from astropy.io import fits
from dagster import build_sensor_context
from sqlalchemy import select

from reduction_assets.catalog import Catalog, Product, Quarantine, RawFrame
from reduction_assets.cli import main
from reduction_assets.fits.headers import card_text
from reduction_assets.orchestration.resources import LandingSourceResource, ReductionHomeResource
from reduction_assets.orchestration.sensors import landing_sensor, request_files
from reduction_assets_tests.assets.test_raw import rows, run_raw, run_rejects
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of
from reduction_assets_tests.runs import run_partition

# landing/ alone: no S3 source to copy arrivals from.
LANDING_DIRECTORY = LandingSourceResource()


def sensor_tick(home):
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    result = landing_sensor(
        build_sensor_context(cursor=None), home=resource, landing_source=LANDING_DIRECTORY
    )
    requested = {r.partition_key or "rejects": request_files(r) for r in result.run_requests or []}
    return result, requested


def age(path, seconds=3600):
    past = os.stat(path, follow_symlinks=False).st_mtime - seconds
    os.utime(path, (past, past), follow_symlinks=False)


def patch_card(source, target, keyword: bytes, card: bytes):
    """Copy of a FITS file with one 80-byte header card replaced byte for byte."""
    raw = bytearray(source.read_bytes())
    index = raw.find(keyword.ljust(8) + b"=")
    raw[index : index + 80] = card.ljust(80)
    target.write_bytes(bytes(raw))
    age(target)
    return target


def reason_of(home, name):
    found = [q for q in rows(home, Quarantine) if q.original_path == name]
    assert found, f"{name} was not quarantined"
    return found[-1].reason, found[-1].message


def test_a_header_with_naxis_999_is_refused_without_stopping_the_sensor(home, lcosim_night):
    good = deliver(frames_of(lcosim_night, "bias")[:1], home.landing)
    patch_card(
        frames_of(lcosim_night, "bias")[1],
        home.landing / "naxis.fits",
        b"NAXIS",
        b"NAXIS   =                  999",
    )
    _, requested = sensor_tick(home)
    assert requested == {"lcosim|2026-11-20": good, "rejects": ["naxis.fits"]}
    run_rejects(home, ["naxis.fits"])
    assert reason_of(home, "naxis.fits") == ("bad_header", "naxis.fits: NAXIS = 999 but NAXIS3 is missing")


def test_non_ascii_header_bytes_are_a_bad_header_not_truncation(home, lcosim_night):
    patch_card(
        frames_of(lcosim_night, "bias")[0],
        home.landing / "umlaut.fits",
        b"INSTRUME",
        "INSTRUME= 'lcosim  ü'".encode(),
    )
    run_rejects(home, ["umlaut.fits"])
    reason, message = reason_of(home, "umlaut.fits")
    assert reason == "bad_header" and "byte 0xc3" in message and "INSTRUME" in message


def test_compressed_files_say_they_are_compressed(home, lcosim_night):
    source = frames_of(lcosim_night, "bias")[0]
    (home.landing / "frame.fits.gz").write_bytes(gzip.compress(source.read_bytes()))
    with fits.open(source) as hdul:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdul[0].data, hdul[0].header)]).writeto(
            home.landing / "frame.fits.fz"
        )
    for name in ("frame.fits.gz", "frame.fits.fz"):
        age(home.landing / name)
    _, requested = sensor_tick(home)
    assert requested == {"rejects": ["frame.fits.fz", "frame.fits.gz"]}
    run_rejects(home, ["frame.fits.gz", "frame.fits.fz"])
    assert reason_of(home, "frame.fits.gz")[0] == "compressed"
    reason, message = reason_of(home, "frame.fits.fz")
    assert reason == "compressed" and "tile-compressed" in message and "funpack" in message


def test_a_file_name_that_is_not_utf8_is_ingested_through_the_sensor_and_run_config(
    home, capsys, lcosim_night
):
    name = os.fsdecode(b"bias \xff\xfe.fits")
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, [name])
    result, requested = sensor_tick(home)
    assert requested == {"lcosim|2026-11-20": [name]}
    config_names = result.run_requests[0].run_config["ops"]["raw_frames"]["config"]["files"]
    config_names[0].encode("utf-8")  # plain text in the run config
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    (row,) = rows(home, RawFrame)
    assert row.original_name == "bias \\xff\\xfe.fits"


@pytest.mark.parametrize("name", ["Grüße vom Teleskop.fits", "two\nlines.fits", "tab\there.fits"])
def test_unusual_but_valid_names_are_reduced_with_safe_headers(home, lcosim_night, name):
    calibrations = [f for f in lcosim_night.frames if "_science" not in f.name]
    science = frames_of(lcosim_night, "science")[0]
    names = deliver(calibrations, home.landing) + deliver([science], home.landing, [name])
    run_partition(home, names)
    (product,) = rows(home, Product)
    assert product.status == "reduced"
    with fits.open(home.products / product.path) as hdul:
        assert hdul[0].header["RAWFILE"] == card_text(name)
        assert all(32 <= ord(c) < 127 for c in hdul[0].header["RAWFILE"])


def test_fifos_hidden_and_unfinished_transfers_are_listed_not_skipped_silently(home, capsys, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, [".hidden.fits"])
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, ["stuck.fits.part"])
    os.mkfifo(home.landing / "pipe.fits")
    assert main(["--home", str(home.root), "quarantine", "--ignored", "--json"]) == 0
    import json

    listed = {row["name"]: row["reason"] for row in json.loads(capsys.readouterr().out)}
    assert listed == {
        ".hidden.fits": "hidden",
        "stuck.fits.part": "temporary_name",
        "pipe.fits": "not_a_regular_file",
    }
    result, requested = sensor_tick(home)
    assert requested == {} and "3 ignored" in result.skip_reason.skip_message


def test_links_are_refused_before_their_target_is_read(home, tmp_path, lcosim_night):
    # A FIFO blocks whoever opens it for reading: refusing the link must not open it.
    os.mkfifo(tmp_path / "outside.fifo")
    os.symlink(tmp_path / "outside.fifo", home.landing / "escape.fits")
    os.mkfifo(home.landing / ".inside.fifo")
    os.symlink(home.landing / ".inside.fifo", home.landing / "inner.fits")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("tick", sensor_tick(home)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the sensor blocked reading a FIFO"
    assert outcome["tick"][1] == {"rejects": ["escape.fits", "inner.fits"]}
    run_rejects(home, ["escape.fits", "inner.fits"])
    assert reason_of(home, "escape.fits")[0] == "outside_landing"
    assert reason_of(home, "inner.fits")[0] == "not_a_regular_file"


def test_copies_never_widen_the_landing_files_permissions(home, lcosim_night):
    names = deliver(frames_of(lcosim_night, "bias")[:2], home.landing)
    os.chmod(home.landing / names[0], 0o600)
    (home.landing / "secret.fits").write_text("private notes")
    os.chmod(home.landing / "secret.fits", 0o640)
    age(home.landing / "secret.fits")
    run_raw(home, names)
    run_rejects(home, ["secret.fits"])
    modes = {
        row.original_name: stat.S_IMODE(os.stat(home.raw / row.store_path).st_mode)
        for row in rows(home, RawFrame)
    }
    assert modes == {names[0]: 0o400, names[1]: 0o444}
    (copy,) = [q.copy_path for q in rows(home, Quarantine)]
    assert stat.S_IMODE(os.stat(home.quarantine / copy).st_mode) == 0o440


def test_under_umask_000_nothing_in_the_home_is_world_writable(tmp_path, lcosim_night):
    from reduction_assets.support.home import Home

    old = os.umask(0)
    try:
        home = Home(tmp_path / "open_home")
        deliver(frames_of(lcosim_night, "bias"), home.landing)
        assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    finally:
        os.umask(old)
    writable = [
        p
        for p in home.root.rglob("*")
        if p != home.landing and home.landing not in p.parents and os.lstat(p).st_mode & stat.S_IWOTH
    ]
    assert writable == []
    assert stat.S_IMODE(os.stat(home.raw).st_mode) == 0o755


def test_a_frame_with_a_block_of_nan_and_inf_is_reduced_with_those_pixels_flagged(home, lcosim_night):
    science = frames_of(lcosim_night, "science")
    with fits.open(science[0]) as hdul:
        data = hdul[0].data.astype(np.float32)
        data[40:60, 30:50] = np.nan
        data[70, 10:20] = np.inf
        data[71, 10:20] = -np.inf
        fits.PrimaryHDU(data, hdul[0].header).writeto(home.landing / "holes.fits")
        fits.PrimaryHDU(np.full_like(data, np.nan), hdul[0].header).writeto(home.landing / "void.fits")
    others = [f for f in lcosim_night.frames if f != science[0]]
    names = deliver(others, home.landing) + ["holes.fits", "void.fits"]
    age(home.landing / "holes.fits"), age(home.landing / "void.fits")
    run_partition(home, names)
    by_name = {frame.original_name: product for product, frame in _products(home, Product)}
    assert by_name["void.fits"].status == "not_reducible"
    assert "no finite pixel" in by_name["void.fits"].reason
    holes = by_name["holes.fits"]
    assert holes.status == "reduced"
    with fits.open(home.products / holes.path) as hdul:
        assert np.isfinite(hdul["SCI"].data).all()
        assert (hdul["DQ"].data[40:60, 30:50] & 1).all() and (hdul["DQ"].data[70:72, 10:20] & 1).all()
    assert sum(p.status == "reduced" for p in by_name.values()) == 12  # 11 good frames and holes


def _products(home, model):
    with Catalog(home.catalog_url()).session() as session:
        found = session.execute(select(model, RawFrame).join(RawFrame, model.raw_frame_id == RawFrame.id))
        pairs = [(p, f) for p, f in found]
        session.expunge_all()
    return pairs


def test_an_error_reducing_one_frame_leaves_it_not_reducible_and_the_rest_reduced(
    home, lcosim_night, monkeypatch
):
    from reduction_assets.reduction import science as science_assets  # small frames: in this process

    real = science_assets.extract_sources
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("internal pixel buffer full")
        return real(*args, **kwargs)

    monkeypatch.setattr(science_assets, "extract_sources", failing_once)
    result = run_partition(home, deliver(lcosim_night.frames, home.landing), raise_on_error=False)
    statuses = sorted(p.status for p, _ in _products(home, Product))
    assert statuses == ["not_reducible"] + ["reduced"] * 11
    (failed,) = [p for p, _ in _products(home, Product) if p.status == "not_reducible"]
    assert failed.reason == "reduction failed: ValueError: internal pixel buffer full"
    # An exception nobody named is a bug: the other frames are done, and the run is not green.
    assert not result.success


def _bug_in_every_frame(*args, **kwargs):
    raise ZeroDivisionError("injected bug")


def test_a_bug_hitting_every_frame_fails_the_run_and_its_checks_after_recording_the_frames(
    home, lcosim_night, monkeypatch
):
    from dagster import AssetCheckKey, AssetKey, DagsterRunStatus, instance_for_test
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    from reduction_assets.reduction import science as science_assets  # small frames: in this process

    monkeypatch.setattr(science_assets, "extract_sources", _bug_in_every_frame)
    names = deliver(lcosim_night.frames, home.landing)
    with instance_for_test() as instance:
        from dagster import materialize

        from reduction_assets.orchestration.partitions import partition_key
        from reduction_assets_tests.runs import ALL, PARTITION, resources

        result = materialize(
            ALL, selection=PARTITION, partition_key=partition_key("lcosim", NIGHT),
            resources=resources(home), instance=instance, raise_on_error=False,
            run_config={"ops": {"raw_frames": {"config": {"files": names}}}},
        )  # fmt: skip
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.FAILURE
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "reduced_frames" and "12 frames failed with an unexpected error" in str(
            failure.event_specific_data.error_display_string
        )
        check = AssetCheckKey(AssetKey("reduced_frames"), "all_frames_reduced")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
        # Never evaluated, in a failed run: the UI shows the check as "execution failed".
        assert record.status == AssetCheckExecutionRecordStatus.PLANNED
        assert instance.get_run_by_id(record.run_id).status == DagsterRunStatus.FAILURE
    # What it finished is recorded: every frame, with the error as its reason.
    rows = _products(home, Product)
    assert len(rows) == 12 and {p.status for p, _ in rows} == {"not_reducible"}
    assert {p.reason for p, _ in rows} == {"reduction failed: ZeroDivisionError: injected bug"}


def test_process_exits_1_when_a_bug_hits_the_frames(home, lcosim_night):
    import subprocess
    import sys

    deliver(lcosim_night.frames, home.landing)
    script = (
        "import sys\n"
        "from reduction_assets.reduction import science\n"
        "from reduction_assets_tests.test_hostile_landing import _bug_in_every_frame\n"
        "science.extract_sources = _bug_in_every_frame\n"
        "from reduction_assets.cli import main\n"
        f"sys.exit(main(['--home', {str(home.root)!r}, 'process', '--settle-seconds', '0', '--json']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert '"exit_code": 1' in done.stdout and '"success": false' in done.stdout
