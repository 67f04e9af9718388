"""Exact medians on every core: numpy's values bit for bit."""

import warnings

import numpy as np
import pytest

from reduction_assets.kernels.select import lower_median, median


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or (a == b and np.signbit(a) == np.signbit(b))


def awkward(n: int, dtype, seed: int) -> np.ndarray:
    """Sky-like values with ties, signed zeros, subnormals, infinities and values of both signs."""
    rng = np.random.default_rng(seed)
    values = rng.normal(rng.uniform(-50, 50), 20.0, n)
    ties = rng.random(n) < 0.3
    values[ties] = np.round(values[ties])
    info = np.finfo(dtype)
    special = [0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, np.inf, -np.inf, info.max]
    picks = rng.random(n) < 0.05
    values[picks] = rng.choice(special, picks.sum())
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 101, 1000, 65_537, 300_000])
def test_the_median_is_numpys_bit_for_bit(dtype, n):
    for seed in range(3):
        values = awkward(n, dtype, seed + n)
        assert same(median(values), float(np.median(values)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_median_of_the_selected_values_is_numpys_of_that_selection(dtype):
    values = awkward(200_000, dtype, 1).reshape(400, 500)
    where = np.random.default_rng(2).random(values.shape) < 0.7
    assert same(median(values, where), float(np.median(values[where])))
    assert np.isnan(median(values, np.zeros(values.shape, bool)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_gives_nan_unless_skipped_as_nanmedian_does(dtype):
    values = awkward(10_001, dtype, 3)
    values[::97] = np.nan
    values[5] = -np.nan  # a NaN with its sign bit set
    assert np.isnan(median(values))
    assert same(median(values, skip_nan=True), float(np.nanmedian(values)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isnan(median(np.full(9, np.nan, dtype), skip_nan=True))


def test_a_2048_sky_frame_gives_numpys_median():
    sky = np.random.default_rng(4).normal(1200.0, 35.0, (2048, 2048)).astype(np.float32)
    clean = np.random.default_rng(5).random(sky.shape) < 0.97
    assert median(sky) == float(np.median(sky))
    assert median(sky, clean) == float(np.median(sky[clean]))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 5000])
def test_the_lower_median_is_the_value_of_rank_n_minus_1_over_2_with_nan_last(n):
    values = awkward(n, np.float32, 6)
    values[::3] = np.float32(-np.nan)  # numpy sorts NaN last whatever its sign bit
    where = np.arange(n) % 4 != 1
    selected = values[where]
    k = (selected.size - 1) // 2
    assert same(lower_median(values, where), float(np.partition(selected, k)[k]))
    assert lower_median(values, np.zeros(n, bool)) == 0.0


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_integer_values_give_numpys_median(dtype):
    raw = np.random.default_rng(8).integers(0, 60_000, (300, 301)).astype(dtype)
    assert same(median(raw), float(np.median(raw)))
    assert same(median(raw[:, :300]), float(np.median(raw[:, :300])))  # an even count


def test_values_other_than_numbers_and_a_mismatched_selection_are_refused():
    with pytest.raises(ValueError, match="integers, float32 or float64"):
        median(np.ones(10, np.complex64))
    with pytest.raises(ValueError, match="where has 3 elements"):
        median(np.ones(10, np.float32), np.ones(3, bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_images_with_ties_nans_and_selections_give_numpys_medians(dtype):
    # Large enough for the sampled bracket (at least four samples' worth of values).
    rng = np.random.default_rng(11)
    values = np.round(rng.normal(300.0, 4.0, 520_001)).astype(dtype)  # few distinct values, many ties
    where = rng.random(values.size) < 0.8
    assert same(median(values), float(np.median(values)))
    assert same(median(values[:-1]), float(np.median(values[:-1])))  # an even count
    assert same(median(values, where), float(np.median(values[where])))
    k = (where.sum() - 1) // 2
    assert same(lower_median(values, where), float(np.partition(values[where], k)[k]))
    values[rng.random(values.size) < 0.01] = np.nan
    values[7] = -np.nan
    assert np.isnan(median(values))
    assert same(median(values, skip_nan=True), float(np.nanmedian(values)))


def test_the_sampled_bracket_decides_a_sky_image_and_gives_way_where_it_cannot(monkeypatch):
    import reduction_assets.kernels.select as select

    histograms = []
    original = select._Counted

    def counted(*args):
        histograms.append(args)
        return original(*args)

    monkeypatch.setattr(select, "_Counted", counted)
    sky = np.random.default_rng(12).normal(1000.0, 30.0, (700, 700)).astype(np.float32)
    assert median(sky) == float(np.median(sky))
    assert histograms == []
    # Nine values in ten equal: the bracket holds more than it has room for; the histogram decides.
    flat = sky.copy()
    flat[np.random.default_rng(13).random(flat.shape) < 0.9] = np.float32(1000.0)
    assert median(flat) == float(np.median(flat))
    # Most values NaN and skipped: too few left in the sample to bracket anything.
    sparse = sky.copy()
    sparse[np.random.default_rng(14).random(sparse.shape) < 0.9] = np.nan
    assert median(sparse, skip_nan=True) == float(np.nanmedian(sparse))
    assert len(histograms) == 2
