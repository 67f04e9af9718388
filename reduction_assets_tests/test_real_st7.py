"""The real SBIG ST-7 frames of 2019-10-28/29 (Toronto), ingested end to end by `process`."""

import datetime as dt

import pytest
from sqlalchemy import select

from reduction_assets.catalog import Catalog, RawDuplicate, RawFrame
from reduction_assets.catalog.queries import progress_rows
from reduction_assets.process import process_landing
from reduction_assets.home import Home
from reduction_assets_tests.conftest import REAL_ST7, deliver, require


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    real_st7 = REAL_ST7
    require(real_st7.is_dir(), f"the real ST-7 frames are not at {real_st7}")
    home = Home(tmp_path_factory.mktemp("st7") / "home").ensure()
    deliver(sorted(real_st7.glob("*.fit")), home.landing)
    outcome = process_landing(home, settle_seconds=0, echo=lambda *_: None)
    assert outcome.runs and not outcome.failed
    catalog = Catalog(home.catalog_url())
    with catalog.session() as session:
        frames = {row.original_name: row for row in session.scalars(select(RawFrame))}
        duplicates = list(session.scalars(select(RawDuplicate)))
        progress = progress_rows(session, dt.date(2019, 10, 28), dt.date(2019, 10, 29), ["st7"])
    return frames, duplicates, progress


def test_all_darks_and_the_three_spectra_are_in_night_2019_10_28(ingested):
    frames, _, _ = ingested
    first_night = {name for name, row in frames.items() if row.night == dt.date(2019, 10, 28)}
    darks = {name for name in first_night if name.startswith("DarkBefore")}
    assert len(darks) == 21
    assert first_night - darks == {"EnifSpec.fit", "NaviSpec.fit", "ScheatSpec.fit"}


def test_the_900s_darks_after_utc_midnight_stay_in_the_local_night(ingested):
    frames, _, _ = ingested
    long_darks = [row for row in frames.values() if row.frame_type == "dark" and row.exptime == 900.0]
    assert len(long_darks) == 5
    assert all(row.date_obs.date() == dt.date(2019, 10, 29) for row in long_darks)
    assert all(row.night == dt.date(2019, 10, 28) for row in long_darks)


def test_vega_and_the_neon_lamp_are_in_night_2019_10_29(ingested):
    frames, _, _ = ingested
    second = {name for name, row in frames.items() if row.night == dt.date(2019, 10, 29)}
    assert second == {"Vega.fit", "NeonCalibration.fit"}
    assert frames["Vega.fit"].frame_type == "science"


def test_the_byte_identical_copy_is_a_duplicate(ingested):
    frames, duplicates, _ = ingested
    assert "DarkBefore-007D120s.fit" in frames and "DarkBefore-007D120s__1_.fit" not in frames
    (duplicate,) = duplicates
    assert duplicate.original_name == "DarkBefore-007D120s__1_.fit"
    assert duplicate.raw_frame_id == frames["DarkBefore-007D120s.fit"].id


def test_frames_carry_the_cameras_gain_binning_and_no_filter(ingested):
    frames, _, _ = ingested
    row = frames["Vega.fit"]
    assert (row.binning, row.filter, row.naxis1, row.naxis2) == ("1x1", "none", 765, 510)
    assert row.header["EGAIN"] == pytest.approx(2.55)


def test_progress_counts_both_nights(ingested):
    _, _, progress = ingested
    by_night = {row["night"]: row for row in progress}
    assert (by_night["2019-10-28"]["raw"], by_night["2019-10-28"]["duplicates"]) == (24, 1)
    assert (by_night["2019-10-29"]["raw"], by_night["2019-10-29"]["duplicates"]) == (2, 0)
    assert by_night["2019-10-28"]["last_raw_time"] == "2019-10-29T03:44:44"
