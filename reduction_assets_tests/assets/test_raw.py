"""raw_frames and landing_rejects: ingestion, idempotency, and every kind of bad input.

Every bad input ends as a quarantine row with a machine-readable reason, and nothing is ever deleted
from landing/.
"""

import os
import shutil

import pytest
from dagster import AssetKey, materialize
from sqlalchemy import select

from reduction_assets.catalog import Catalog, Quarantine, RawDuplicate, RawFrame
from reduction_assets.orchestration.assets.raw import landing_rejects, raw_frames
from reduction_assets.orchestration.partitions import partition_key
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of, with_header


def run_raw(home, files=None, instrument="lcosim", night=NIGHT, settle=0.0):
    config = {"files": files} if files is not None else {}
    result = materialize(
        [raw_frames, landing_rejects],
        selection=[AssetKey("raw_frames")],
        partition_key=partition_key(instrument, night),
        resources={"home": ReductionHomeResource(home=str(home.root), settle_seconds=settle)},
        run_config={"ops": {"raw_frames": {"config": config}}},
    )
    assert result.success
    return result.asset_materializations_for_node("raw_frames")[0].metadata


def run_rejects(home, files):
    result = materialize(
        [raw_frames, landing_rejects],
        selection=[AssetKey("landing_rejects")],
        resources={"home": ReductionHomeResource(home=str(home.root), settle_seconds=0.0)},
        run_config={"ops": {"landing_rejects": {"config": {"files": files}}}},
    )
    assert result.success
    return result.asset_materializations_for_node("landing_rejects")[0].metadata


def rows(home, model):
    with Catalog(home.catalog_url()).session() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def landing_files(home):
    return sorted(p.relative_to(home.landing).as_posix() for p in home.landing.rglob("*") if p.is_file())


def test_a_night_is_ingested_with_counts_by_type_and_filter(home, lcosim_night):
    names = deliver(lcosim_night.frames, home.landing)
    metadata = run_raw(home, names)
    assert metadata["ingested"].value == 32
    counts = {(r["frame_type"], r["filter"]): r["count"] for r in metadata["by_type_filter"].value}
    assert counts == {
        ("bias", "-"): 5,
        ("dark", "-"): 5,
        ("flat", "gp"): 5,
        ("flat", "rp"): 5,
        ("science", "gp"): 6,
        ("science", "rp"): 6,
    }
    assert metadata["total_frames"].value == 32
    stored = rows(home, RawFrame)
    assert len(stored) == 32
    for row in stored:
        assert (home.raw / row.store_path).is_file()
        assert row.store_path.startswith("lcosim/2026-11-20/")
    assert landing_files(home) == sorted(names)  # landing is only read


def test_stored_copies_verify_against_their_checksums(home, lcosim_night):
    from reduction_assets.support.checksums import sha256_of

    run_raw(home, deliver(lcosim_night.frames[:3], home.landing))
    for row in rows(home, RawFrame):
        assert sha256_of(home.raw / row.store_path) == row.checksum


def test_catalog_rows_hold_the_normalised_header(home, lcosim_night):
    science = frames_of(lcosim_night, "science")[0]
    run_raw(home, deliver([science], home.landing))
    (row,) = rows(home, RawFrame)
    assert (row.frame_type, row.filter, row.exptime, row.binning) == ("science", "gp", 60.0, "1x1")
    assert row.object == "NGC 253 field" and row.ra == pytest.approx(11.888, abs=0.01)
    assert row.header["OBSTYPE"] == "EXPOSE" and row.normalised["night"] == "2026-11-20"


def test_rerunning_a_partition_adds_nothing(home, lcosim_night):
    names = deliver(lcosim_night.frames, home.landing)
    run_raw(home, names)
    again = run_raw(home, names)
    assert again["ingested"].value == 0 and again["already_ingested"].value == 32
    assert len(rows(home, RawFrame)) == 32 and rows(home, RawDuplicate) == []


def test_a_manual_run_scans_landing_for_its_own_partition(home, lcosim_night, noirsim_night):
    deliver(lcosim_night.frames + noirsim_night.frames, home.landing)
    metadata = run_raw(home, files=None, instrument="noirsim")
    assert metadata["ingested"].value == 32
    assert {row.instrument for row in rows(home, RawFrame)} == {"noirsim"}


def test_files_of_another_partition_are_left_for_it(home, lcosim_night, noirsim_night):
    names = deliver(frames_of(lcosim_night, "bias") + frames_of(noirsim_night, "bias"), home.landing)
    metadata = run_raw(home, names, instrument="lcosim")
    assert metadata["ingested"].value == 5 and metadata["other_partition"].value == 5


# --- bad input ---------------------------------------------------------------------------------


def quarantined(home):
    return [(q.original_path, q.reason) for q in rows(home, Quarantine) if q.resolved_at is None]


def test_not_fits_is_quarantined(home):
    (home.landing / "notes.fits").write_text("observing log, not an image\n" * 200)
    run_rejects(home, ["notes.fits"])
    assert quarantined(home) == [("notes.fits", "not_fits")]
    assert landing_files(home) == ["notes.fits"]
    (row,) = rows(home, Quarantine)
    assert (home.quarantine / row.copy_path).read_bytes() == (home.landing / "notes.fits").read_bytes()


def test_zero_byte_file_is_quarantined(home):
    (home.landing / "empty.fits").touch()
    os.utime(home.landing / "empty.fits", (0, 0))
    run_rejects(home, ["empty.fits"])
    assert quarantined(home) == [("empty.fits", "empty_file")]
    assert landing_files(home) == ["empty.fits"]


def test_truncated_fits_is_quarantined(home, lcosim_night):
    source = frames_of(lcosim_night, "bias")[0].read_bytes()
    (home.landing / "cut.fits").write_bytes(source[: len(source) // 2])
    os.utime(home.landing / "cut.fits", (0, 0))
    metadata = run_raw(home, ["cut.fits"])
    assert metadata["quarantined"].value == 1
    assert quarantined(home) == [("cut.fits", "truncated")]
    (row,) = rows(home, Quarantine)
    assert (row.instrument, row.night) == ("lcosim", NIGHT)  # routed from its header all the same
    assert landing_files(home) == ["cut.fits"]


def test_a_file_still_being_written_waits_and_is_ingested_once_settled(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, ["fresh.fits"], age_seconds=0)
    run_raw(home, ["fresh.fits"], settle=60)
    assert quarantined(home) == [("fresh.fits", "still_being_written")]
    assert rows(home, RawFrame) == []
    past = os.stat(home.landing / "fresh.fits").st_mtime - 120
    os.utime(home.landing / "fresh.fits", (past, past))
    metadata = run_raw(home, ["fresh.fits"], settle=60)
    assert metadata["ingested"].value == 1
    assert quarantined(home) == []  # the transient entry is resolved, kept as history
    assert rows(home, Quarantine)[0].resolution.startswith("ingested as raw frame")


@pytest.mark.parametrize("keyword", ["OBSTYPE", "DATE-OBS"])
def test_missing_frame_type_or_date_is_quarantined(home, lcosim_night, keyword):
    with_header(frames_of(lcosim_night, "bias")[0], home.landing / "bare.fits", **{keyword: None})
    run_rejects(home, ["bare.fits"])
    (row,) = rows(home, Quarantine)
    assert row.reason == "missing_keyword" and keyword in row.message
    assert landing_files(home) == ["bare.fits"]


def test_unparseable_date_is_quarantined(home, lcosim_night):
    with_header(
        frames_of(lcosim_night, "bias")[0],
        home.landing / "when.fits",
        **{"DATE-OBS": "last tuesday", "DAY-OBS": None},
    )
    run_rejects(home, ["when.fits"])
    (row,) = rows(home, Quarantine)
    assert row.reason == "bad_date" and "last tuesday" in row.message


def test_unknown_instrument_is_quarantined(home, lcosim_night):
    with_header(frames_of(lcosim_night, "bias")[0], home.landing / "alien.fits", INSTRUME="hubble")
    run_rejects(home, ["alien.fits"])
    (row,) = rows(home, Quarantine)
    assert row.reason == "unknown_instrument" and "hubble" in row.message
    assert landing_files(home) == ["alien.fits"]


def test_data_shape_that_does_not_match_the_instrument_is_quarantined(home, noirsim_night):
    # A noirsim-sized frame claiming to be the ST-7, which reads full frames only.
    with_header(
        frames_of(noirsim_night, "bias")[0],
        home.landing / "shape.fits",
        INSTRUME="ST-7",
        IMAGETYP="DARK",
        XBINNING=1,
        YBINNING=1,
    )
    run_raw(home, ["shape.fits"], instrument="st7")
    (row,) = rows(home, Quarantine)
    assert row.reason == "shape_mismatch" and "(96, 180)" in row.message and "(510, 765)" in row.message


def test_a_window_of_a_camera_that_reads_windows_is_accepted(home, noirsim_night):
    # A 96x164 imaging area (plus lcosim's 16 overscan columns) is a window of lcosim's 4096x4096.
    with_header(
        frames_of(noirsim_night, "bias")[0],
        home.landing / "window.fits",
        INSTRUME="lcosim",
        OBSTYPE="BIAS",
        CCDSUM="1 1",
        DAY_OBS="20261120",
    )
    run_raw(home, ["window.fits"])
    (row,) = rows(home, RawFrame)
    assert (row.naxis2, row.naxis1) == (96, 180) and rows(home, Quarantine) == []


def test_object_with_path_separators_cannot_escape_the_store(home, lcosim_night):
    with_header(
        frames_of(lcosim_night, "science")[0], home.landing / "evil.fits", OBJECT="../../../etc/passwd"
    )
    run_raw(home, ["evil.fits"])
    (row,) = rows(home, RawFrame)
    assert row.object == "../../../etc/passwd"  # the header value is kept as data
    assert ".." not in row.store_path and row.store_path.count("/") == 2
    assert (home.raw / row.store_path).resolve().is_relative_to(home.raw)


def test_file_names_with_dots_are_stored_under_canonical_names(home, lcosim_night):
    names = deliver(frames_of(lcosim_night, "bias")[:1], home.landing, ["..weird name...fits"])
    run_raw(home, names)
    (row,) = rows(home, RawFrame)
    assert row.original_name == "..weird name...fits"
    assert row.store_path.startswith("lcosim/2026-11-20/lcosim_20261120_bias_")


def test_a_name_that_leaves_the_landing_area_is_refused(home, tmp_path, lcosim_night):
    shutil.copyfile(frames_of(lcosim_night, "bias")[0], tmp_path / "outside.fits")
    run_rejects(home, ["../../outside.fits"])
    assert quarantined(home) == [("../../outside.fits", "outside_landing")]
    assert rows(home, RawFrame) == [] and (tmp_path / "outside.fits").exists()


def test_same_content_under_two_names_is_one_frame_and_a_duplicate(home, lcosim_night):
    bias = frames_of(lcosim_night, "bias")[0]
    names = deliver([bias, bias], home.landing, ["a.fits", "copy of a.fits"])
    metadata = run_raw(home, names)
    assert metadata["ingested"].value == 1 and metadata["duplicates"].value == 1
    assert len(rows(home, RawFrame)) == 1
    (duplicate,) = rows(home, RawDuplicate)
    assert duplicate.original_name == "copy of a.fits"
    run_raw(home, names)
    assert len(rows(home, RawDuplicate)) == 1  # seen again, still one duplicate


def test_different_content_under_an_ingested_name_is_quarantined(home, lcosim_night):
    first, second = frames_of(lcosim_night, "bias")[:2]
    deliver([first], home.landing, ["bias.fits"])
    run_raw(home, ["bias.fits"])
    deliver([second], home.landing, ["bias.fits"])
    run_raw(home, ["bias.fits"])
    assert quarantined(home) == [("bias.fits", "name_conflict")]
    (frame,) = rows(home, RawFrame)
    assert (home.raw / frame.store_path).read_bytes() == first.read_bytes()  # original kept
    (row,) = rows(home, Quarantine)
    assert (home.quarantine / row.copy_path).read_bytes() == second.read_bytes()  # newcomer kept


def test_a_file_removed_before_the_run_is_recorded_as_vanished(home):
    metadata = run_raw(home, ["gone.fits"])
    assert metadata["quarantined"].value == 1
    assert quarantined(home) == [("gone.fits", "vanished")]


def test_negative_exposure_time_is_quarantined(home, lcosim_night):
    with_header(frames_of(lcosim_night, "dark")[0], home.landing / "neg.fits", EXPTIME=-5.0)
    run_rejects(home, ["neg.fits"])
    assert quarantined(home) == [("neg.fits", "bad_value")]


def test_quarantining_the_same_file_twice_records_it_once(home):
    (home.landing / "junk.fits").write_bytes(b"\x00" * 100)
    run_rejects(home, ["junk.fits"])
    run_rejects(home, ["junk.fits"])
    assert len(rows(home, Quarantine)) == 1
