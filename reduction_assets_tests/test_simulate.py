import datetime as dt
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from reduction_assets.simulator.night import SimulationConfig, Truth, simulate_night
from reduction_assets_tests.conftest import NIGHT, frames_of


def _data(path):
    return fits.getdata(path).astype(np.float64)


def test_same_seed_gives_byte_identical_frames(tmp_path, registry, lcosim_night):
    again = simulate_night(registry["lcosim"], NIGHT, tmp_path / "again", SimulationConfig(seed=11))
    assert [p.name for p in again.frames] == [p.name for p in lcosim_night.frames]
    for first, second in zip(lcosim_night.frames, again.frames):
        assert first.read_bytes() == second.read_bytes()


def test_another_seed_gives_other_noise(tmp_path, registry, lcosim_night):
    other = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path / "other",
        SimulationConfig(seed=12, n_dark=0, n_flat=0, n_dither=0),
    )
    assert not np.array_equal(_data(other.frames[0]), _data(lcosim_night.frames[0]))


def test_night_has_calibrations_and_dithered_science_of_two_targets_in_two_filters(lcosim_night):
    kinds = [f.frame_type for f in lcosim_night.truth.frames]
    assert kinds.count("bias") == 5 and kinds.count("dark") == 5 and kinds.count("flat") == 10
    science = [f for f in lcosim_night.truth.frames if f.frame_type == "science"]
    assert len(science) == 12
    assert {f.target for f in science} == {"NGC 253 field", "SN 2026xyz/host"}
    assert {f.filter for f in science} == {"gp", "rp"}
    assert len({f.crval for f in science}) == 12  # every exposure pointed differently


def test_truth_file_round_trips(lcosim_night):
    truth = Truth.load(lcosim_night.truth_path)
    np.testing.assert_array_equal(truth.bias, lcosim_night.truth.bias)
    np.testing.assert_array_equal(truth.flats["rp"], lcosim_night.truth.flats["rp"])
    assert truth.frames == lcosim_night.truth.frames


def test_overscan_carries_the_bias_level_and_read_noise(registry, lcosim_night):
    lco = registry["lcosim"]
    truth = lcosim_night.truth
    bias_frames = frames_of(lcosim_night, "bias")
    levels, noises = [], []
    for path, frame in zip(bias_frames, truth.frames):
        overscan = _data(path)[:, 128:]
        levels.append(overscan.mean() - frame.bias_offset)
        noises.append(overscan.std())
    assert np.mean(levels) == pytest.approx(1000.0, abs=0.1)
    expected_noise = np.hypot(lco.read_noise / lco.gain, np.sqrt(1 / 12))  # plus rounding to integers
    assert np.mean(noises) == pytest.approx(expected_noise, rel=0.03)


def test_bias_frames_show_the_column_pattern(lcosim_night):
    truth = lcosim_night.truth
    stack = np.mean(
        [_data(p) - f.bias_offset for p, f in zip(frames_of(lcosim_night, "bias"), truth.frames)], axis=0
    )
    column_profile = stack[:, :128].mean(axis=0)
    true_profile = truth.bias[:, :128].mean(axis=0)
    assert np.std(true_profile) == pytest.approx(3.0, rel=0.3)
    # 5 frames x 128 rows: the column means are known to 4.7 / sqrt(640) = 0.19 ADU.
    assert np.std(column_profile - true_profile) < 0.3


def test_dark_frames_measure_the_dark_rate_and_hot_pixels(registry, lcosim_night):
    lco, truth = registry["lcosim"], lcosim_night.truth
    frames = [f for f in truth.frames if f.frame_type == "dark"]
    signal = np.median(
        [
            (_data(p)[:, :128] - truth.bias[:, :128] - f.bias_offset) * lco.gain / f.exptime
            for p, f in zip(frames_of(lcosim_night, "dark"), frames)
        ],
        axis=0,
    )
    hot = np.zeros(signal.shape, bool)
    hot[tuple(truth.hot_pixels.T)] = True
    _, median, _ = sigma_clipped_stats(signal[~hot])
    # 3 e per pixel in 300 s under 7.5 e read noise: the clipped level is good to ~0.002 e/s.
    assert median == pytest.approx(0.01, abs=0.005)
    measured, injected = signal[hot], truth.dark_rate[hot]
    assert np.corrcoef(measured, injected)[0, 1] > 0.98


def test_flats_follow_the_injected_flat_field(lcosim_night):
    truth = lcosim_night.truth
    flats = [(p, f) for p, f in zip(lcosim_night.frames, truth.frames) if f.frame_type == "flat"]
    for name in ("gp", "rp"):
        frames = [
            (_data(p)[:, :128] - truth.bias[:, :128] - f.bias_offset) for p, f in flats if f.filter == name
        ]
        normalised = np.median([frame / np.median(frame) for frame in frames], axis=0)
        ratio = normalised / truth.flats[name]
        good = np.ones(ratio.shape, bool)
        good[:, truth.bad_columns] = False
        # 20000 e per frame: 0.7 % per pixel, ~0.4 % for the median of five.
        assert np.std(ratio[good]) < 0.006
        assert np.median(normalised[:, truth.bad_columns]) < 0.3  # the bad columns are there


def test_stars_sit_where_the_header_wcs_puts_them(lcosim_night):
    truth = lcosim_night.truth
    path = frames_of(lcosim_night, "science")[0]
    frame = truth.frames[[f.name for f in truth.frames].index(path.name)]
    header = fits.getheader(path)
    data = _data(path)
    stars = truth.stars[truth.stars["target"] == frame.target]
    x, y = WCS(header).all_world2pix(stars["ra"], stars["dec"], 0)
    inside = (x > 5) & (x < 122) & (y > 5) & (y < 122)
    brightest = np.argsort(stars[f"rate_{frame.filter}"] * inside)[-3:]
    for i in brightest:
        xi, yi = int(round(x[i])), int(round(y[i]))
        cut = data[yi - 2 : yi + 3, xi - 2 : xi + 3]
        peak = np.unravel_index(np.argmax(cut), cut.shape)
        assert abs(peak[0] - 2) <= 1 and abs(peak[1] - 2) <= 1


def test_bright_stars_saturate_at_the_instrument_limit(registry, lcosim_night):
    peaks = [fits.getdata(p).max() for p in frames_of(lcosim_night, "science")]
    assert max(peaks) == registry["lcosim"].saturation


def test_cosmic_rays_are_injected_and_recorded(lcosim_night):
    truth = lcosim_night.truth
    assert len(truth.cosmic_rays) > 0
    science = [i for i, f in enumerate(truth.frames) if f.frame_type == "science"]
    assert sum(truth.frames[i].n_cosmic_rays for i in science) > 0


def test_headers_follow_each_instruments_convention(lcosim_night, noirsim_night):
    lco = fits.getheader(frames_of(lcosim_night, "science")[0])
    noir = fits.getheader(frames_of(noirsim_night, "science")[0])
    assert lco["OBSTYPE"] == "EXPOSE" and lco["DAY-OBS"] == "20261120" and lco["CCDSUM"] == "1 1"
    assert noir["IMAGETYP"] == "object" and "DAY-OBS" not in noir and noir["CCDBIN1"] == 1
    assert noir["FILTER"] in ("V Harris c6026", "R Harris c6004")
    assert noir["BIASSEC"] == "[1:20,1:96]" and lco["BIASSEC"] == "[129:144,1:128]"


def test_a_west_site_night_crosses_utc_midnight(registry, noirsim_night):
    dates = {dt.datetime.fromisoformat(f.date_obs).date() for f in noirsim_night.truth.frames}
    assert dates == {dt.date(2026, 11, 20), dt.date(2026, 11, 21)}
    site = registry["noirsim"].site
    assert {site.night_of(dt.datetime.fromisoformat(f.date_obs)) for f in noirsim_night.truth.frames} == {
        NIGHT
    }


def test_sizes_the_camera_cannot_read_out_are_refused(tmp_path, registry):
    with pytest.raises(ValueError, match="not a readout of st7"):
        simulate_night(registry["st7"], NIGHT, tmp_path, SimulationConfig(size=(100, 100)))
    with pytest.raises(ValueError, match="not a readout of lcosim"):
        simulate_night(registry["lcosim"], NIGHT, tmp_path, SimulationConfig(size=(4100, 100)))
    with pytest.raises(ValueError, match="window of at least 32x32"):
        simulate_night(registry["lcosim"], NIGHT, tmp_path, SimulationConfig(size=(16, 64)))


def test_a_window_of_a_camera_that_reads_windows_is_simulated(tmp_path, registry):
    night = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path,
        SimulationConfig(size=(100, 60), n_bias=1, n_dark=1, n_flat=1, n_targets=1, n_dither=1),
    )
    assert fits.getdata(night.frames[0]).shape == (100, 60 + 16)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_flat": 24}, "--n-flat at most 14 with 2 filters"),
        ({"n_dark": 10, "dark_exptime": 900.0}, "the darks would take 2.6 h, but the night has 2.0 h"),
        ({"science_exptime": 3000.0}, "12 science exposures of 3000 s do not fit the 8 h of the night"),
        ({"science_exptime": 0.0}, "science_exptime must be within 0..3600 s"),
        ({"n_bias": 61}, "--n-bias at most 60"),
    ],
)
def test_nights_that_cannot_happen_are_refused_with_the_limit(tmp_path, registry, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        simulate_night(registry["lcosim"], NIGHT, tmp_path, SimulationConfig(**changes))
