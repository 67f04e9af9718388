"""combine() against the definitions people use today: astropy's sigma_clip and BANZAI's stacking."""

import itertools
import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clip
from astropy.utils.exceptions import AstropyUserWarning

from reduction_assets.kernels import BANZAI_MAD_TO_SIGMA, combine
from reduction_assets.kernels.network import BOTH, LOW_ONLY, batcher_network, selection_network


def stack_with_outliers(n, seed=0, shape=(24, 70), dtype=np.float64, nan_fraction=0.0):
    rng = np.random.default_rng(seed)
    stack = rng.normal(1000.0, 5.0, (n, *shape))
    hits = rng.random(stack.shape) < 0.04  # cosmic rays
    stack[hits] += rng.uniform(30, 3000, hits.sum())
    if nan_fraction:
        stack[rng.random(stack.shape) < nan_fraction] = np.nan
    return stack.astype(dtype)


def astropy_reference(stack, stdfunc, maxiters, cenfunc="median", mask=None):
    data = np.ma.masked_array(stack, mask=mask) if mask is not None else stack
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        clipped = sigma_clip(data, axis=0, sigma=3, maxiters=maxiters, cenfunc=cenfunc, stdfunc=stdfunc)
    clipped = np.ma.masked_invalid(clipped)
    # The mean in float64 whatever the input: numpy would accumulate float32 data in float32.
    return clipped.astype(np.float64).mean(axis=0).filled(np.nan), (~clipped.mask).sum(axis=0)


def banzai_reference(stack, sigma=3.0):
    """BANZAI's sigma_clipped_mean (utils/stats.py), transcribed: one pass, 1.4826 x MAD."""
    median = np.median(stack, axis=0)
    deviation = np.abs(stack - median)
    robust_std = 1.4826 * np.median(deviation, axis=0)
    rejected = deviation > sigma * robust_std
    kept = np.where(rejected, 0.0, stack)
    return kept.sum(axis=0) / (~rejected).sum(axis=0), (~rejected).sum(axis=0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16, 33, 50, 64])
def test_batcher_network_sorts_any_input(n):
    first, second = batcher_network(n)
    rng = np.random.default_rng(n)
    cases = rng.integers(0, 4, (200, n)).astype(float)  # many ties
    cases = np.vstack([cases, rng.normal(size=(200, n))])
    for i, j in zip(first, second):
        low = np.minimum(cases[:, i], cases[:, j])
        cases[:, j] = np.maximum(cases[:, i], cases[:, j])
        cases[:, i] = low
    assert np.all(np.diff(cases, axis=1) >= 0)


@pytest.mark.parametrize("n", [4, 7, 12])
def test_batcher_network_sorts_every_zero_one_input(n):
    # The 0-1 principle: a network that sorts every 0/1 input sorts every input.
    first, second = batcher_network(n)
    cases = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    for i, j in zip(first, second):
        low = np.minimum(cases[:, i], cases[:, j])
        cases[:, j] = np.maximum(cases[:, i], cases[:, j])
        cases[:, i] = low
    assert np.all(np.diff(cases, axis=1) >= 0)


def apply_selection(cases, n, ranks):
    first, second, kind = selection_network(n, ranks)
    for i, j, k in zip(first, second, kind):
        low = np.minimum(cases[:, i], cases[:, j])
        high = np.maximum(cases[:, i], cases[:, j])
        if k in (BOTH, LOW_ONLY):
            cases[:, i] = low
        if k != LOW_ONLY:
            cases[:, j] = high
    return cases


@pytest.mark.parametrize("n", [1, 2, 3, 8, 19, 20, 33, 50, 64])
def test_selection_network_gives_the_middle_ranks_of_any_input(n):
    ranks = tuple(sorted({(n - 1) // 2, n // 2}))
    rng = np.random.default_rng(100 + n)
    cases = np.vstack([rng.integers(0, 3, (300, n)).astype(float), rng.normal(size=(300, n))])
    expected = np.sort(cases, axis=1)[:, list(ranks)]
    np.testing.assert_array_equal(apply_selection(cases, n, ranks)[:, list(ranks)], expected)


@pytest.mark.parametrize("n", [9, 12])
def test_selection_network_gives_the_middle_ranks_of_every_zero_one_input(n):
    ranks = tuple(sorted({(n - 1) // 2, n // 2}))
    cases = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    expected = np.sort(cases, axis=1)[:, list(ranks)]
    np.testing.assert_array_equal(apply_selection(cases, n, ranks)[:, list(ranks)], expected)


def test_the_median_network_is_pruned_to_a_quarter_fewer_compare_exchanges_at_50_frames():
    first, _, kind = selection_network(50, (24, 25))
    assert len(batcher_network(50)[0]) == 403
    assert len(first) == 330 and int(np.sum(kind == BOTH)) == 282


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [6, 7, 20, 21])
def test_median_orders_negative_zero_tiny_and_huge_values_like_numpy(dtype, n):
    # The networks sort the floats' bit patterns as integers: negative values, signed zeros,
    # subnormals and the extremes of the type must come out in the floats' order.
    info = np.finfo(dtype)
    special = np.array(
        [
            -0.0,
            0.0,
            info.smallest_subnormal,
            -info.smallest_subnormal,
            info.max,
            -info.max,
            info.tiny,
            -1.5,
            1.5,
        ],
        dtype=dtype,
    )
    rng = np.random.default_rng(n)
    stack = rng.choice(special, (n, 16, 300)).astype(dtype)
    stack[:, :8] = rng.normal(-3.0, 2.0, (n, 8, 300)).astype(dtype)
    result = combine(stack, "median")
    with np.errstate(over="ignore"):
        expected = np.median(stack, axis=0)  # the mean of +-max overflows alike in both
    np.testing.assert_array_equal(result.data, expected.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_of_a_tile_with_invalid_values_is_that_of_the_valid_ones(dtype):
    # All-valid tiles take the pruned network, the others the full sort: both must agree with numpy.
    stack = stack_with_outliers(20, seed=21, shape=(6, 600), dtype=dtype)
    stack[3, 2, 400] = np.nan
    stack[5, 4, 10] = -np.inf
    result = combine(stack, "median")
    expected = np.nanmedian(np.where(np.isfinite(stack), stack, np.nan), axis=0)
    np.testing.assert_array_equal(result.data, expected.astype(dtype))
    assert result.n_used[2, 400] == 19 and result.n_used[4, 10] == 19 and result.n_used[0, 0] == 20


def test_sigma_clip_of_values_around_zero_reproduces_astropy():
    stack = stack_with_outliers(20, seed=22) - 1000.0  # half the values negative
    result = combine(stack, "sigma_clip", max_iters=None)
    expected, used = astropy_reference(stack, "std", None)
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [3, 4, 7, 20, 50])
@pytest.mark.parametrize("scale, stdfunc", [("std", "std"), ("mad", "mad_std")])
@pytest.mark.parametrize("max_iters", [1, 3, None])
def test_sigma_clip_reproduces_astropy(n, scale, stdfunc, max_iters):
    stack = stack_with_outliers(n, seed=n)
    result = combine(stack, "sigma_clip", scale=scale, max_iters=max_iters)
    expected, used = astropy_reference(stack, stdfunc, max_iters)
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("stdfunc, scale", [("std", "std"), ("mad_std", "mad")])
def test_mean_centred_clipping_reproduces_astropy(stdfunc, scale):
    stack = stack_with_outliers(11, seed=3)
    result = combine(stack, "sigma_clip", center="mean", scale=scale, max_iters=None)
    expected, used = astropy_reference(stack, stdfunc, None, cenfunc="mean")
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=1e-13)


def test_float32_stacks_reproduce_astropy_to_float32_rounding():
    stack = stack_with_outliers(20, seed=4, dtype=np.float32)
    result = combine(stack, "sigma_clip", max_iters=None)
    expected, used = astropy_reference(stack, "std", None)
    assert result.data.dtype == np.float32
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=6e-8)  # half a float32 ulp


@pytest.mark.parametrize("n", [2, 3, 5, 9, 20, 50])
def test_single_pass_mad_clipping_reproduces_banzai(n):
    stack = stack_with_outliers(n, seed=10 + n)
    result = combine(stack, "sigma_clip", scale="mad", max_iters=1, mad_factor=BANZAI_MAD_TO_SIGMA)
    expected, used = banzai_reference(stack)
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=1e-13)


def test_masked_and_invalid_values_never_enter():
    stack = stack_with_outliers(9, seed=5, nan_fraction=0.05)
    stack[0, 0, 0] = np.inf
    mask = np.random.default_rng(6).random(stack.shape) < 0.1
    result = combine(stack, "sigma_clip", mask=mask, max_iters=None)
    expected, used = astropy_reference(stack, "std", None, mask=mask)
    np.testing.assert_array_equal(result.n_used, used)
    np.testing.assert_allclose(result.data, expected, rtol=1e-13)


def test_median_and_mean_match_numpy():
    stack = stack_with_outliers(10, seed=7)
    np.testing.assert_array_equal(combine(stack, "median").data, np.median(stack, axis=0))
    np.testing.assert_allclose(combine(stack, "mean").data, stack.mean(axis=0), rtol=1e-13)
    odd = stack[:7]
    np.testing.assert_array_equal(combine(odd, "median").data, np.median(odd, axis=0))


def test_weights_give_the_weighted_mean_of_the_survivors():
    stack = stack_with_outliers(8, seed=8)
    weights = np.linspace(0.5, 2.0, 8)
    result = combine(stack, "sigma_clip", weights=weights, max_iters=None)
    clipped = sigma_clip(stack, axis=0, sigma=3, maxiters=None, cenfunc="median", stdfunc="std")
    expected = np.ma.average(clipped, axis=0, weights=weights)
    np.testing.assert_allclose(result.data, expected, rtol=1e-13)


def test_scales_multiply_each_frame_first():
    stack = stack_with_outliers(6, seed=9)
    scales = np.array([1.0, 0.5, 2.0, 1.5, 0.8, 1.1])
    scaled = combine(stack, "sigma_clip", scales=scales)
    direct = combine(stack * scales[:, None, None], "sigma_clip")
    np.testing.assert_array_equal(scaled.data, direct.data)


def test_error_is_the_standard_error_of_the_clipped_mean():
    stack = stack_with_outliers(15, seed=11)
    result = combine(stack, "sigma_clip", max_iters=None)
    clipped = sigma_clip(stack, axis=0, sigma=3, maxiters=None, cenfunc="median", stdfunc="std")
    expected = clipped.std(axis=0, ddof=1) / np.sqrt((~clipped.mask).sum(axis=0))
    np.testing.assert_allclose(result.error, expected, rtol=1e-8)


def test_error_of_the_median_is_sqrt_pi_over_2_larger():
    stack = np.random.default_rng(12).normal(0, 1, (25, 10, 10))
    result = combine(stack, "median")
    expected = np.sqrt(np.pi / 2) * stack.std(axis=0, ddof=1) / 5
    np.testing.assert_allclose(result.error, expected, rtol=1e-10)


def test_noise_of_the_combined_image_matches_its_error():
    stack = np.random.default_rng(13).normal(100, 4, (20, 64, 64))
    result = combine(stack, "sigma_clip")
    assert np.std(result.data) == pytest.approx(np.median(result.error), rel=0.05)


# --- bad input -------------------------------------------------------------------------------


def test_a_stack_of_one_frame_returns_it_with_no_error():
    frame = np.random.default_rng(14).normal(0, 1, (1, 5, 6))
    result = combine(frame, "sigma_clip")
    np.testing.assert_array_equal(result.data, frame[0])
    assert np.all(result.n_used == 1) and np.all(np.isnan(result.error))


def test_a_stack_of_two_frames_is_their_mean():
    pair = np.random.default_rng(15).normal(0, 1, (2, 5, 6))
    result = combine(pair, "sigma_clip")
    np.testing.assert_allclose(result.data, pair.mean(axis=0), rtol=1e-14)
    assert np.all(result.n_used == 2)


def test_zero_scatter_keeps_every_value():
    flat = np.full((7, 4, 4), 3.25)
    for scale in ("std", "mad"):
        result = combine(flat, "sigma_clip", scale=scale)
        assert np.all(result.data == 3.25) and np.all(result.n_used == 7) and np.all(result.error == 0)


def test_pixels_with_no_valid_value_are_nan_with_zero_count():
    stack = np.ones((4, 3, 3))
    stack[:, 1, 1] = np.nan
    mask = np.zeros(stack.shape, bool)
    mask[:, 2, 2] = True
    result = combine(stack, "sigma_clip", mask=mask)
    assert np.isnan(result.data[1, 1]) and result.n_used[1, 1] == 0 and np.isnan(result.error[1, 1])
    assert np.isnan(result.data[2, 2]) and result.n_used[2, 2] == 0
    assert result.data[0, 0] == 1.0


def test_integer_stacks_are_combined_as_float32():
    raw = np.random.default_rng(16).integers(0, 65535, (5, 8, 8), dtype=np.uint16)
    result = combine(raw, "median")
    assert result.data.dtype == np.float32
    np.testing.assert_array_equal(result.data, np.median(raw.astype(np.float32), axis=0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "average"}, "method"),
        ({"method": "sigma_clip", "center": "mode"}, "center"),
        ({"method": "sigma_clip", "scale": "iqr"}, "scale"),
        ({"method": "sigma_clip", "sigma_low": 0}, "positive"),
        ({"method": "sigma_clip", "max_iters": 0}, "max_iters"),
        ({"method": "mean", "weights": [1, 2]}, "one value per frame"),
        ({"method": "mean", "weights": [1, 2, -1]}, "positive"),
        ({"method": "mean", "scales": [1, np.nan, 1]}, "finite"),
        ({"method": "mean", "mask": np.zeros((3, 2, 2), bool)}, "mask shape"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        combine(np.zeros((3, 4, 4)), **kwargs)


def test_a_stack_must_be_three_dimensional():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        combine(np.zeros((4, 4)), "mean")


def test_a_masked_arrays_mask_is_honoured():
    rng = np.random.default_rng(8)
    stack = np.ma.MaskedArray(rng.normal(100, 1, (5, 6, 7)).astype(np.float32), mask=False)
    stack.data[2, 3, 4] = 1e9
    stack.mask[2, 3, 4] = True
    result = combine(stack, "mean")
    assert result.n_used[3, 4] == 4 and result.n_used.sum() == 5 * 42 - 1
    assert result.data[3, 4] == pytest.approx(np.mean(np.delete(stack.data[:, 3, 4], 2)), rel=1e-6)


@pytest.mark.parametrize(
    "dtype, expected",
    [(">f4", np.float32), ("<f4", np.float32), (">f8", np.float64), ("f2", np.float32), (">i2", np.float32)],
)
def test_the_result_has_the_stacks_float_width_whatever_its_byte_order(dtype, expected):
    stack = np.random.default_rng(9).normal(100, 5, (5, 4, 4)).astype(dtype)
    result = combine(stack, "sigma_clip")
    assert result.data.dtype == expected and result.error.dtype == expected
    np.testing.assert_allclose(result.data, combine(stack.astype(np.float64), "sigma_clip").data, rtol=1e-3)


def test_model_clipping_keeps_clean_values_and_rejects_what_the_noise_cannot_explain():
    from reduction_assets.kernels import NoiseModel

    rng = np.random.default_rng(12)
    stack = rng.normal(10.0, 2.0, (5, 200, 200)).astype(np.float32)
    stack[1, 5, 5] += 40.0  # one hit among five
    stack[1:3, 6, 6] += (150.0, 170.0)  # two hits among five at one pixel
    stack[4, 7, 7] = np.nan
    four = stack[:4].copy()
    four[0:2, 8, 8] += (150.0, 170.0)  # two hits among four: the centre must not fall between them
    noise = NoiseModel(floor=4.0)
    result = combine(stack, "sigma_clip", scale="model", noise=noise)
    assert (result.n_used[5, 5], result.n_used[6, 6]) == (4, 3)
    assert result.n_used[7, 7] in (3, 4)  # the NaN never counts
    assert np.mean(result.n_used == 5) > 0.97  # 3 sigma of a known noise clips ~1 % of clean values
    assert combine(four, "sigma_clip", scale="model", noise=noise).n_used[8, 8] == 2
    with pytest.raises(ValueError, match="needs a noise model"):
        combine(stack, "sigma_clip", scale="model")
