"""The real SBIG ST-7 frames of 2019-10-28/29 (Toronto), ingested end to end by `process`."""

import datetime as dt

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from reduction_assets.catalog import Calibration, Catalog, RawDuplicate, RawFrame
from reduction_assets.catalog.reports import progress_rows
from reduction_assets.orchestration.process import process_landing
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import REAL_ST7, deliver, require

pytestmark = pytest.mark.real_data


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
        masters = {row.exptime: row for row in session.scalars(select(Calibration)) if row.exptime > 0}
    return frames, duplicates, progress, masters, home


def test_all_darks_and_the_three_spectra_are_in_night_2019_10_28(ingested):
    frames = ingested[0]
    first_night = {name for name, row in frames.items() if row.night == dt.date(2019, 10, 28)}
    darks = {name for name in first_night if name.startswith("DarkBefore")}
    assert len(darks) == 21
    assert first_night - darks == {"EnifSpec.fit", "NaviSpec.fit", "ScheatSpec.fit"}


def test_the_900s_darks_after_utc_midnight_stay_in_the_local_night(ingested):
    frames = ingested[0]
    long_darks = [row for row in frames.values() if row.frame_type == "dark" and row.exptime == 900.0]
    assert len(long_darks) == 5
    assert all(row.date_obs.date() == dt.date(2019, 10, 29) for row in long_darks)
    assert all(row.night == dt.date(2019, 10, 28) for row in long_darks)


def test_vega_and_the_neon_lamp_are_in_night_2019_10_29(ingested):
    frames = ingested[0]
    second = {name for name, row in frames.items() if row.night == dt.date(2019, 10, 29)}
    assert second == {"Vega.fit", "NeonCalibration.fit"}
    assert frames["Vega.fit"].frame_type == "science"


def test_the_byte_identical_copy_is_a_duplicate(ingested):
    frames, duplicates = ingested[:2]
    assert "DarkBefore-007D120s.fit" in frames and "DarkBefore-007D120s__1_.fit" not in frames
    (duplicate,) = duplicates
    assert duplicate.original_name == "DarkBefore-007D120s__1_.fit"
    assert duplicate.raw_frame_id == frames["DarkBefore-007D120s.fit"].id


def test_frames_carry_the_cameras_gain_binning_and_no_filter(ingested):
    frames = ingested[0]
    row = frames["Vega.fit"]
    assert (row.binning, row.filter, row.naxis1, row.naxis2) == ("1x1", "none", 765, 510)
    assert row.header["EGAIN"] == pytest.approx(2.55)


def test_progress_counts_both_nights(ingested):
    progress = ingested[2]
    by_night = {row["night"]: row for row in progress}
    assert (by_night["2019-10-28"]["raw"], by_night["2019-10-28"]["duplicates"]) == (24, 1)
    assert (by_night["2019-10-29"]["raw"], by_night["2019-10-29"]["duplicates"]) == (2, 0)
    assert by_night["2019-10-28"]["last_raw_time"] == "2019-10-29T03:44:44"


def test_master_darks_are_made_per_exposure_time(ingested):
    masters = ingested[3]
    assert sorted(masters) == [120.0, 300.0, 900.0]
    assert {t: m.input_count for t, m in masters.items()} == {120.0: 11, 300.0: 5, 900.0: 5}
    assert all(m.type == "dark" and m.night == dt.date(2019, 10, 28) for m in masters.values())


def test_the_duplicate_dark_enters_its_master_once(ingested):
    names = [entry["name"] for entry in ingested[3][120.0].inputs]
    assert names.count("DarkBefore-007D120s.fit") == 1 and "DarkBefore-007D120s__1_.fit" not in names


def test_the_dark_signal_grows_with_exposure_time(ingested):
    masters, home = ingested[3], ingested[4]
    # Darks of a camera without bias frames include the bias: the signal above it grows with time,
    # which shows most in the warm (hot) pixels.
    levels = {}
    for exptime, row in masters.items():
        with fits.open(home.products / row.path) as hdul:
            assert hdul[0].header["BUNIT"] == "electron" and hdul[0].header["EXPTIME"] == exptime
            data = hdul["SCI"].data
            levels[exptime] = (np.median(data), np.percentile(data, 99.9))
    assert levels[120.0][0] < levels[300.0][0] < levels[900.0][0]
    assert levels[120.0][1] < levels[300.0][1] < levels[900.0][1]
    assert masters[900.0].statistics["hot_pixels"] > masters[120.0].statistics["hot_pixels"]


def test_no_bias_master_is_expected_from_a_camera_without_bias_frames(ingested):
    masters = ingested[3]
    assert all(m.type == "dark" for m in masters.values())


def test_a_120s_spectrum_is_dark_corrected_with_the_120s_bias_including_dark(ingested, registry):
    from reduction_assets.fits.reading import read_master
    from reduction_assets.reduction.masters import Master
    from reduction_assets.reduction.science import NotReducible, calibrate_science

    masters, home = ingested[3], ingested[4]
    st7 = registry["st7"]
    dark = read_master(home.products / masters[120.0].path)
    unit_flat = Master(
        np.ones_like(dark.data), np.zeros_like(dark.data), np.zeros(dark.data.shape, np.uint16)
    )
    raw = fits.getdata(REAL_ST7 / "EnifSpec.fit").astype(np.float32)
    geometry = st7.geometry(raw.shape, (1, 1))
    result = calibrate_science(
        raw, instrument=st7, geometry=geometry, exptime=120.0, bias=None, dark=dark, flat=unit_flat
    )
    # The pedestal (~2260 e-) and the warm pixels go; what is left is light (spectrum, sky) and noise.
    assert abs(np.median(result.sci)) < 0.05 * np.median(dark.data)
    assert result.statistics["cosmic_ray_pixels"] < 0.01 * result.sci.size
    warm = dark.data > np.percentile(dark.data, 99.9)
    assert np.median(np.abs(result.sci[warm])) < 0.2 * np.median(dark.data[warm] - np.median(dark.data))
    with pytest.raises(NotReducible, match="cannot be scaled"):
        calibrate_science(
            raw, instrument=st7, geometry=geometry, exptime=60.0, bias=None, dark=dark, flat=unit_flat
        )


def test_all_five_spectra_are_reduced_without_a_flat_and_say_so(ingested):
    from reduction_assets.catalog import Product

    home = ingested[4]
    with Catalog(home.catalog_url()).session() as session:
        rows = {
            frame.original_name: product
            for product, frame in session.execute(
                select(Product, RawFrame).join(RawFrame, Product.raw_frame_id == RawFrame.id)
            )
        }
    assert set(rows) == {"EnifSpec.fit", "NaviSpec.fit", "ScheatSpec.fit", "Vega.fit", "NeonCalibration.fit"}
    assert {p.status for p in rows.values()} == {"reduced"}
    assert all(set(p.skipped) == {"flat"} and p.flat_id is None for p in rows.values())
    with fits.open(home.products / rows["Vega.fit"].path) as hdul:
        header = hdul[0].header
        assert header["SCIMODE"] == "spectrum" and header["FLATSKIP"].startswith("optional, none found")
        assert header["DARKAGE"] == 1  # the 120 s darks of the night before
        assert header["GAIN"] == 1.0 and header["RAWGAIN"] == pytest.approx(2.55, abs=0.2)
        assert len(hdul["CAT"].data) == 0  # a spectrum has no source catalogue


def test_the_neon_arc_lines_are_not_cosmic_rays(ingested):
    from reduction_assets.catalog import Product

    home = ingested[4]
    with Catalog(home.catalog_url()).session() as session:
        product = session.scalars(
            select(Product).join(RawFrame).where(RawFrame.original_name == "NeonCalibration.fit")
        ).one()
    with fits.open(home.products / product.path) as hdul:
        sci, err, dq = hdul["SCI"].data, hdul["ERR"].data, hdul["DQ"].data
    lit = sci > np.median(sci) + 10 * err  # the arc lines and nothing else is this bright
    assert lit.sum() > 2000
    # L.A.Cosmic alone flagged 992 pixels, nearly all on the lines; the ground-level rate of cosmic
    # rays gives a few hits on this chip in 120 s.
    assert product.statistics["cosmic_ray_candidates"] > 900
    assert np.count_nonzero(dq & 128) <= 10 and np.count_nonzero((dq & 128).astype(bool) & lit) <= 2


def test_a_pedestal_and_a_dark_rate_are_fitted_through_the_three_exposure_times(ingested):
    from reduction_assets.fits.reading import read_master

    masters, home = ingested[3], ingested[4]
    with Catalog(home.catalog_url()).session() as session:
        fitted = {
            row.type: row for row in session.scalars(select(Calibration).where(Calibration.exptime == 0))
        }
    assert set(fitted) == {"bias", "dark"}
    stats = fitted["dark"].statistics
    assert (stats["exptimes_s"], stats["shortest_s"], stats["longest_s"]) == (3.0, 120.0, 900.0)
    assert stats["synthetic"] == 1.0 and 0 < stats["fit_chi2_median"] < 3
    assert stats["fit_bad_fraction"] < 0.02
    pedestal = read_master(home.products / fitted["bias"].path)
    rate = read_master(home.products / fitted["dark"].path)
    dark300 = read_master(home.products / masters[300.0].path)
    # The line predicts the 300 s master within its errors, pixel by pixel.
    residual = (dark300.data - pedestal.data - 300.0 * rate.data) / np.hypot(dark300.error, pedestal.error)
    good = (rate.dq == 0) & (dark300.dq == 0)
    assert abs(np.median(residual[good])) < 0.5 and np.mean(np.abs(residual[good]) < 5) > 0.99
    # A CCD cooled to -17 C: next to no dark current in most pixels, warm pixels well above it.
    assert abs(np.median(rate.data[good])) < 0.05 and np.percentile(rate.data[good], 99.9) > 0.3


def test_quality_of_the_spectra_is_recorded_as_missing_with_the_reason_and_darks_are_measured(ingested):
    from reduction_assets.catalog.quality import partition_metrics

    *_, home = ingested
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            rows = partition_metrics(session, "st7", dt.date(2019, 10, 28))
    finally:
        catalog.dispose()
    reduced = [r for r in rows if r.subject_kind == "reduced"]
    assert reduced and {r.metric for r in reduced if r.value is None} == {
        "sky", "sources", "fwhm", "fwhm_arcsec", "ellipticity", "zero_point",
    }  # fmt: skip
    assert {r.reason for r in reduced if r.value is None} == {"a spectrum: no sky or stars to measure"}
    assert all(r.value is not None for r in reduced if r.metric in ("cosmic_rays", "flagged_fraction"))
    darks = [r for r in rows if r.metric == "dark_current"]
    # Darks that include the bias give no rate: missing, with the reason; the fitted rate dark has one.
    assert any(r.value is None and "with its bias" in r.reason for r in darks)
    (rate,) = [r.value for r in darks if r.value is not None]
    assert abs(rate) < 0.1  # e-/s: the median pixel of a cooled CCD; the hot ones are counted apart
    (pedestal,) = [r.value for r in rows if r.metric == "master_bias_level"]
    assert pedestal != rate  # the synthetic bias's own level, not the fit's rate
