"""Signature removal in one pass: the planes of calibrate's numpy steps applied in turn, bit for bit."""

import numpy as np
import pytest

from reduction_assets.kernels.signature import DQCarry, MasterPlanes, any_finite, remove_signature
from reduction_assets.reduction import calibrate

NO_DATA, SATURATED, BAD = 1, 2, 4
LOW_COUNT, HOT, LOW, HIGH = 8, 16, 32, 64
BIAS = DQCarry(merge=NO_DATA | LOW_COUNT, merge_into=NO_DATA)
DARK = DQCarry(copy=NO_DATA | HOT)
FLAT = DQCarry(copy=NO_DATA | LOW | HIGH)
GAIN, READ_NOISE, SATURATION, EXPTIME = 1.37, 7.3, 60000.0, 45.0
IMAGING = (slice(2, 130), slice(3, 103))  # of a 134 x 110 readout, overscan on the right
SHAPE = (128, 100)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """The same values to the bit: signed zeros apart, NaN where NaN (whatever its payload)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    width = np.uint32 if a.dtype == np.float32 else np.uint64
    return np.array_equal(np.where(nan, 0, a).view(width), np.where(nan, 0, b).view(width))


def awkward_planes(seed: int):
    """A raw readout and masters with NaN, infinities, signed zeros, saturation at the threshold's
    float32 neighbours, flats at and around the lowest usable response and random DQ bits."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(1500.0, 40.0, (134, 110)).astype(np.float32)
    picks = rng.integers(0, raw.size, 300)
    raw.flat[picks[:40]] = np.nan
    raw.flat[picks[40:50]] = np.inf
    raw.flat[picks[50:60]] = -np.inf
    raw.flat[picks[60:80]] = np.float32(SATURATION)
    raw.flat[picks[80:100]] = np.nextafter(np.float32(SATURATION), np.float32(0))
    raw.flat[picks[100:120]] = -0.0
    raw.flat[picks[120:140]] = 70000.0

    def master(level, spread, error):
        data = rng.normal(level, spread, SHAPE).astype(np.float32)
        err = np.abs(rng.normal(error, error / 3, SHAPE)).astype(np.float32)
        dq = np.where(rng.random(SHAPE) < 0.05, rng.integers(0, 128, SHAPE), 0).astype(np.uint16)
        spots = rng.integers(0, data.size, 60)
        data.flat[spots[:10]] = np.nan
        data.flat[spots[10:20]] = -0.0
        err.flat[spots[20:25]] = np.inf
        return data, err, dq

    bias = master(400.0, 5.0, 1.0)
    dark = master(0.05, 0.2, 0.01)  # e-/s, some negative
    flat = master(1.0, 0.3, 0.002)
    flat[0].flat[rng.integers(0, flat[0].size, 80)] = np.float32(0.05)
    flat[0].flat[rng.integers(0, flat[0].size, 80)] = np.nextafter(np.float32(0.05), np.float32(1))
    flat[0].flat[rng.integers(0, flat[0].size, 40)] = -1.0
    bad = rng.random(SHAPE) < 0.01
    levels = calibrate.overscan_levels(raw, (slice(None), slice(104, 110)))
    return raw, levels, bias, dark, flat, bad


def numpy_steps(raw, levels, bias, dark, flat, bad, dark_is_rate=True):
    """The planes by calibrate's steps one after the other on whole images (the noise model of
    reduction.science), each a numpy expression in float32."""
    with np.errstate(all="ignore"):  # infinities and NaN meet on purpose
        return _numpy_steps(raw, levels, bias, dark, flat, bad, dark_is_rate)


def _numpy_steps(raw, levels, bias, dark, flat, bad, dark_is_rate):
    raw = np.asarray(raw, dtype=np.float32)
    dq = np.zeros(SHAPE, dtype=np.uint16)
    dq[~np.isfinite(raw[IMAGING])] |= NO_DATA
    dq[raw[IMAGING] >= SATURATION] |= SATURATED
    if bad is not None:
        dq[bad] |= BAD
    adu = raw if levels is None else calibrate.subtract_overscan(raw, levels)
    electrons = calibrate.to_electrons(calibrate.trim(adu, IMAGING), GAIN)
    variance = np.full(SHAPE, READ_NOISE**2, dtype=np.float32)
    if bias is not None:
        electrons = calibrate.subtract_bias(electrons, bias[0])
        variance += bias[1] ** 2
        dq[(bias[2] & (NO_DATA | LOW_COUNT)) != 0] |= NO_DATA
    if dark is not None:
        if dark_is_rate:
            electrons = calibrate.subtract_dark(electrons, dark[0], EXPTIME)
            variance += (dark[1] * np.float32(EXPTIME)) ** 2
            variance += np.clip(dark[0] * np.float32(EXPTIME), 0, None)
        dq |= dark[2] & (NO_DATA | HOT)
    variance += np.clip(electrons, 0, None)
    if flat is not None:
        good = np.isfinite(flat[0]) & (flat[0] > 0.05)
        dq[~good] |= NO_DATA
        dq |= flat[2] & (NO_DATA | LOW | HIGH)
        safe = np.where(good, flat[0], 1.0).astype(np.float32)
        sci = electrons / safe
        flat_error = np.where(good, flat[1], 0.0).astype(np.float32)
        variance = variance / safe**2 + (sci * flat_error / safe) ** 2
    else:
        sci = electrons.astype(np.float32, copy=True)
    no_data = (dq & NO_DATA) != 0
    sci[no_data] = 0.0
    variance[no_data | ~np.isfinite(variance)] = np.float32(READ_NOISE**2)
    return sci, variance, np.sqrt(variance), dq


def one_pass(raw, levels, bias, dark, flat, bad, dark_is_rate=True):
    return remove_signature(
        raw,
        IMAGING,
        levels,
        gain=GAIN,
        read_noise=READ_NOISE,
        saturation=SATURATION,
        bits=(NO_DATA, SATURATED, BAD),
        bad_pixels=bad,
        offset=None if bias is None else MasterPlanes(*bias, BIAS),
        dark=None if dark is None else MasterPlanes(*dark, DARK),
        dark_exptime=EXPTIME if dark_is_rate else None,
        flat=None if flat is None else MasterPlanes(*flat, FLAT),
    )


def assert_same_planes(got, expected):
    sci, variance, err, dq = expected
    assert bits_equal(got.sci, sci)
    assert bits_equal(got.variance, variance)
    assert bits_equal(got.err, err)
    assert np.array_equal(got.dq, dq)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_one_pass_gives_the_numpy_steps_planes_bit_for_bit(seed):
    planes = awkward_planes(seed)
    assert_same_planes(one_pass(*planes), numpy_steps(*planes))


@pytest.mark.parametrize("missing", ["overscan", "bias", "dark", "flat", "bad", "all"])
def test_each_calibration_may_be_left_out(missing):
    raw, levels, bias, dark, flat, bad = awkward_planes(3)
    left = {
        "levels": None if missing in ("overscan", "all") else levels,
        "bias": None if missing in ("bias", "all") else bias,
        "dark": None if missing in ("dark", "all") else dark,
        "flat": None if missing in ("flat", "all") else flat,
        "bad": None if missing in ("bad", "all") else bad,
    }
    assert_same_planes(one_pass(raw, **left), numpy_steps(raw, **left))


def test_a_dark_without_exposure_scaling_only_flags():
    raw, levels, bias, dark, flat, bad = awkward_planes(4)
    got = one_pass(raw, levels, bias, dark, flat, bad, dark_is_rate=False)
    assert_same_planes(got, numpy_steps(raw, levels, bias, dark, flat, bad, dark_is_rate=False))
    assert np.count_nonzero(got.dq & HOT) > 0


def test_masters_mapped_read_only_give_the_same_planes():
    planes = awkward_planes(5)
    frozen = []
    for plane in planes:
        for array in plane if isinstance(plane, tuple) else (plane,):
            array.flags.writeable = False
        frozen.append(plane)
    assert_same_planes(one_pass(*frozen), numpy_steps(*frozen))


def test_pixels_without_data_hold_zero_and_the_read_noise():
    got = one_pass(*awkward_planes(6))
    no_data = (got.dq & NO_DATA) != 0
    assert no_data.sum() > 100
    assert np.all(got.sci[no_data] == 0.0)
    assert np.all(got.err[no_data] == np.float32(READ_NOISE))
    assert np.isfinite(got.err).all() and np.isfinite(got.variance).all()


def test_any_finite_stops_at_the_first_finite_value():
    values = np.full((40, 30), np.nan, dtype=np.float32)
    assert not any_finite(values)
    values[39, 29] = np.inf
    assert not any_finite(values)
    values[12, 7] = -3.0
    assert any_finite(values)
    assert any_finite(values[10:20, 5:9])
    assert not any_finite(values[20:, :])


def test_wrong_shapes_are_refused_with_the_shapes_named():
    raw, levels, bias, dark, flat, bad = awkward_planes(7)
    with pytest.raises(ValueError, match=r"3 overscan levels for 134 rows"):
        one_pass(raw, levels[:3], bias, dark, flat, bad)
    with pytest.raises(ValueError, match=r"flat has shape \(128, 99\), the imaging area \(128, 100\)"):
        one_pass(raw, levels, bias, dark, tuple(plane[:, :99] for plane in flat), bad)
    with pytest.raises(ValueError, match=r"bad-pixel mask has shape \(12, 100\)"):
        one_pass(raw, levels, bias, dark, flat, bad[:12])
