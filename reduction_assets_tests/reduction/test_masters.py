"""Masters from a simulated night compared with what the simulator injected."""

import numpy as np
import pytest
from astropy.io import fits

from reduction_assets.reduction.masters import InputFrame, Master, MasterSettings, NoMaster, build_master
from reduction_assets_tests.conftest import with_header
from reduction_assets_tests.reduction.frames import ArrayReader, FileReader, build, frame, inputs


@pytest.fixture(scope="module")
def masters(registry, lcosim_night):
    lco = registry["lcosim"]
    bias = build("bias", inputs(lcosim_night, "bias"), lco).master
    dark = build("dark", inputs(lcosim_night, "dark"), lco, bias=bias).master
    flat = build("flat", inputs(lcosim_night, "flat", "rp"), lco, bias=bias, dark=dark)
    return bias, dark, flat.master, flat


def test_master_bias_matches_the_injected_pattern_within_its_noise(registry, lcosim_night, masters):
    lco, truth = registry["lcosim"], lcosim_night.truth
    bias = masters[0]
    statistics = build("bias", inputs(lcosim_night, "bias"), lco).statistics
    injected = (truth.bias[:, :128] - truth.bias_level) * lco.gain
    residual = bias.data - injected
    # Five frames of 7.5 e- read noise, plus the per-row overscan level (16 pixels) they share, and
    # the efficiency of MAD clipping of five values (~0.85).
    per_pixel = np.hypot(lco.read_noise / np.sqrt(5), 1.2533 * lco.read_noise / np.sqrt(16 * 5))
    assert abs(np.mean(residual)) < 0.1
    assert np.std(residual) < 1.25 * per_pixel
    assert statistics["read_noise_e"] == pytest.approx(lco.read_noise, rel=0.05)


def test_master_dark_recovers_the_dark_rate_and_every_hot_pixel(lcosim_night, masters):
    truth, dark = lcosim_night.truth, masters[1]
    hot = np.zeros(dark.data.shape, bool)
    hot[tuple(truth.hot_pixels.T)] = True
    residual = dark.data - truth.dark_rate
    # 5 x 300 s darks: a pixel's rate is known to ~sqrt(3 + 7.5^2) e- / 300 s / sqrt(5) = 0.012 e-/s.
    assert abs(np.median(residual[~hot])) < 0.002
    assert np.std(residual[~hot]) < 0.03
    np.testing.assert_allclose(dark.data[hot], truth.dark_rate[hot], rtol=0.1, atol=0.05)
    flagged = (dark.dq & 4) != 0
    assert np.array_equal(flagged, hot)


def test_master_flat_matches_the_injected_flat_within_half_a_percent(lcosim_night, masters):
    truth, flat = lcosim_night.truth, masters[2]
    ratio = flat.data / truth.flats["rp"]
    good = np.ones(ratio.shape, bool)
    good[:, truth.bad_columns] = False
    assert np.median(ratio[good]) == pytest.approx(1.0, abs=0.002)
    assert np.sqrt(np.mean((ratio[good] - 1) ** 2)) < 0.005
    assert np.all((flat.dq[:, truth.bad_columns] & 8) != 0)  # the bad columns are LOW_RESPONSE


def test_masters_list_their_inputs(masters):
    flat = masters[3]
    assert len(flat.inputs) == 5 and flat.rejected == []


def test_a_master_can_be_built_from_arrays_alone(registry):
    rng = np.random.default_rng(3)
    lco = registry["lcosim"]
    arrays = {
        f"b{i}": (1000 + rng.normal(0, lco.read_noise / lco.gain, (128, 144))).astype(np.float32)
        for i in range(5)
    }
    frames = [
        InputFrame(key, key, "0" * 64, 0.0, "2026-11-20T06:00:00", (128, 144), (1, 1)) for key in arrays
    ]
    product = build_master("bias", frames, ArrayReader(arrays), lco)
    assert product.master.data.shape == (128, 128)
    assert abs(np.median(product.master.data)) < 0.5  # e-: the overscan took the 1000 ADU level
    assert product.statistics["read_noise_e"] == pytest.approx(lco.read_noise, rel=0.05)


# --- bad input -------------------------------------------------------------------------------


def test_one_or_two_frames_make_no_master(registry, lcosim_night):
    result = build("bias", inputs(lcosim_night, "bias")[:2], registry["lcosim"])
    assert isinstance(result, NoMaster) and "not enough frames: 2 usable of 2, need 3" in result.reason


def test_two_frames_make_a_master_when_the_minimum_allows(registry, lcosim_night):
    result = build("bias", inputs(lcosim_night, "bias")[:2], registry["lcosim"], MasterSettings(min_frames=2))
    assert not isinstance(result, NoMaster) and np.all(result.n_used == 2)


def test_a_frame_marked_bad_is_not_used(registry, lcosim_night):
    frames = inputs(lcosim_night, "bias")
    frames[0] = frame(frames[0].key, bad=True, bad_reason="shutter fault")
    result = build("bias", frames, registry["lcosim"])
    assert len(result.inputs) == 4
    assert (frames[0].name, "marked bad: shutter fault") in result.rejected


def test_duplicate_pixels_are_used_once(registry, lcosim_night, tmp_path):
    frames = inputs(lcosim_night, "bias")
    copy = with_header(frames[0].key, tmp_path / "copy.fits", OBJECT="renamed")
    frames.append(frame(copy, "1" * 64))
    result = build("bias", frames, registry["lcosim"])
    assert len(result.inputs) == 5
    assert result.rejected == [("copy.fits", f"duplicate pixel data of {frames[0].name}")]


def test_a_frame_of_another_shape_is_rejected(registry, lcosim_night, noirsim_night, tmp_path):
    frames = inputs(lcosim_night, "bias")
    odd = noirsim_night.frames[0]
    frames.append(frame(odd, "2" * 64))
    result = build("bias", frames, registry["lcosim"])
    assert len(result.inputs) == 5
    assert result.rejected[0][1].startswith("shape (96, 180) differs")


def test_a_bias_with_a_far_level_is_rejected(registry, lcosim_night, tmp_path):
    frames = inputs(lcosim_night, "bias")
    with fits.open(frames[0].key) as hdul:
        data = hdul[0].data.astype(np.int32)
        data[:, :128] += 40  # 64 e- above the others in the imaging area only: a light leak
        fits.PrimaryHDU(data.astype(np.uint16), hdul[0].header).writeto(tmp_path / "leak.fits")
    frames[0] = frame(tmp_path / "leak.fits", "3" * 64)
    result = build("bias", frames, registry["lcosim"])
    assert [name for name, _ in result.rejected] == ["leak.fits"]
    assert "far from the others" in result.rejected[0][1]


def test_darks_with_exptime_zero_are_rejected(registry, lcosim_night, tmp_path):
    frames = inputs(lcosim_night, "dark")
    frames[0] = frame(frames[0].key, "4" * 64, exptime=0.0)
    bias = build("bias", inputs(lcosim_night, "bias"), registry["lcosim"]).master
    result = build("dark", frames, registry["lcosim"], bias=bias)
    assert len(result.inputs) == 4 and "EXPTIME 0" in result.rejected[0][1]


def test_a_flat_with_no_illumination_is_rejected(registry, lcosim_night, masters, tmp_path):
    bias, dark, *_ = masters
    frames = inputs(lcosim_night, "flat", "rp")
    dark_frame = inputs(lcosim_night, "bias")[0]  # a bias frame labelled as a flat: no light at all
    frames.append(
        InputFrame(
            "dark_flat.fits", dark_frame.key, "5" * 64, 3.0, dark_frame.date_obs, dark_frame.shape, (1, 1)
        )
    )
    result = build("flat", frames, registry["lcosim"], bias=bias, dark=dark)
    assert len(result.inputs) == 5
    assert result.rejected[0][0] == "dark_flat.fits"
    assert "illumination" in result.rejected[0][1] or "too faint" in result.rejected[0][1]


def test_a_saturated_flat_is_rejected(registry, lcosim_night, masters, tmp_path):
    bias, dark, *_ = masters
    frames = inputs(lcosim_night, "flat", "rp")
    with fits.open(frames[0].key) as hdul:
        data = hdul[0].data.astype(np.int64) * 6  # ~80000 ADU of light: clipped at 62000
        saturated = np.clip(data, 0, 62000).astype(np.uint16)
        fits.PrimaryHDU(saturated, hdul[0].header).writeto(tmp_path / "bright.fits")
    frames.append(frame(tmp_path / "bright.fits", "6" * 64, exptime=2.0))
    result = build("flat", frames, registry["lcosim"], bias=bias, dark=dark)
    assert result.rejected[0][0] == "bright.fits" and "saturated" in result.rejected[0][1]


def test_nan_pixels_do_not_enter_the_master(registry, lcosim_night, tmp_path):
    frames = inputs(lcosim_night, "bias")
    with fits.open(frames[0].key) as hdul:
        data = hdul[0].data.astype(np.float32)
        data[10, 10] = np.nan
        data[11, 11] = np.inf
        fits.PrimaryHDU(data, hdul[0].header).writeto(tmp_path / "holes.fits")
    frames[0] = frame(tmp_path / "holes.fits", "7" * 64)
    result = build("bias", frames, registry["lcosim"], MasterSettings(method="mean"))
    assert result.n_used[10, 10] == 4 and result.n_used[11, 11] == 4 and result.n_used[12, 12] == 5
    assert np.isfinite(result.master.data).all()


def test_a_master_of_the_wrong_shape_is_refused(registry, lcosim_night):
    result = build(
        "dark",
        inputs(lcosim_night, "dark"),
        registry["lcosim"],
        bias=Master(*[np.zeros((64, 64), np.float32)] * 3),
    )
    assert isinstance(result, NoMaster) and "master bias has shape (64, 64)" in result.reason


# --- error planes and clipping efficiency ---------------------------------------------------------


def truths(registry, night):
    lco, truth = registry["lcosim"], night.truth
    good = np.ones(truth.dark_rate.shape, bool)
    good[tuple(truth.hot_pixels.T)] = False
    good[:, truth.bad_columns] = False
    return {
        "bias": (truth.bias[:, :128] - truth.bias_level) * lco.gain,
        "dark": truth.dark_rate,
        "flat": truth.flats["rp"],
    }, good


@pytest.mark.parametrize("index, kind", [(0, "bias"), (1, "dark"), (2, "flat")])
def test_master_errors_are_never_zero_and_describe_the_real_error(
    registry, lcosim_night, masters, index, kind
):
    from astropy.stats import mad_std

    master = masters[index]
    truth, good = truths(registry, lcosim_night)
    assert np.all(master.error > 0)  # MAD errors of five integers were 0 for 8-15 % of pixels
    expected = truth[kind]
    if kind == "flat":  # normalised by its illuminated level, the truth by its median
        expected = expected * np.median(master.data[good] / expected[good])
    width = mad_std(((master.data - expected) / master.error)[good])
    assert width == pytest.approx(1.0, abs=0.1)  # was 1.5 (bias, flat) and 2-3.4 (dark)


def test_a_clean_master_bias_is_as_quiet_as_a_plain_mean(registry, lcosim_night, masters):
    lco = registry["lcosim"]
    residual = masters[0].data - truths(registry, lcosim_night)[0]["bias"]
    # Each row shares its frames' overscan levels; what is left is the pixels' own noise.
    pixel_noise = np.std(residual - np.median(residual, axis=1, keepdims=True))
    assert pixel_noise == pytest.approx(lco.read_noise / np.sqrt(5), rel=0.05)  # MAD clipping: +15 %


def test_one_cosmic_ray_among_five_biases_is_still_rejected(registry, lcosim_night):
    frames = inputs(lcosim_night, "bias")
    arrays = {f.key: FileReader().read(f) for f in frames}
    arrays[frames[2].key][40, 50] += 60.0  # ADU: 96 e-, 13 sigma of the read noise
    product = build_master("bias", frames, ArrayReader(arrays), registry["lcosim"])
    assert product.n_used[40, 50] == 4 and product.n_used.sum() >= 0.97 * 5 * product.n_used.size
