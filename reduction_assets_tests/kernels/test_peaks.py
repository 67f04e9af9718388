"""Isolated peaks, flags near positions, the sky under them, and the seeing measured on them."""

import numpy as np
import pytest
import sep

from reduction_assets.kernels.peaks import (
    any_flagged_in_box,
    any_flagged_near,
    isolated_peaks,
    still_isolated,
)
from reduction_assets.reduction.sources import estimate_fwhm, subtract_sky
from reduction_assets.simulator.night import _render_stars


def test_a_peak_is_the_highest_unmasked_pixel_of_its_box_inside_the_image():
    signal = np.zeros((40, 40))
    err = np.ones_like(signal)
    mask = np.zeros(signal.shape, dtype=bool)
    signal[10, 10] = 100.0  # alone: a peak
    signal[10, 30], signal[12, 32] = 100.0, 150.0  # the brighter of two within 3 px wins
    signal[30, 10] = 100.0
    mask[31, 12] = True  # a masked pixel in its box: not measurable
    signal[38, 30] = 100.0  # its box leaves the image
    signal[25, 25] = signal[25, 26] = 100.0  # a flat top: the first pixel only
    signal[20, 5] = 10.0  # below 20 x err
    ys, xs = isolated_peaks(signal, err, mask, 20.0, 3)
    assert list(zip(ys, xs)) == [(10, 10), (12, 32), (25, 25)]


@pytest.mark.parametrize("wider", [5, 6, 9, 14])
def test_peaks_still_isolated_in_a_wider_box_are_those_a_pass_with_that_box_finds(wider):
    rng = np.random.default_rng(wider)
    signal = rng.normal(0.0, 1.0, (300, 240))
    signal[rng.integers(0, 300, 400), rng.integers(0, 240, 400)] += rng.uniform(30, 300, 400)
    signal[100, 100] = signal[100, 104] = 500.0  # equal peaks: the first in row-major order wins
    err = np.ones_like(signal)
    mask = rng.random(signal.shape) < 0.002
    ys, xs = isolated_peaks(signal, err, mask, 20.0, 5)
    wide = still_isolated(signal, mask, ys, xs, wider)
    expected = isolated_peaks(signal, err, mask, 20.0, wider)
    assert (ys[wide].tolist(), xs[wide].tolist()) == (expected[0].tolist(), expected[1].tolist())
    assert 0 < wide.sum() < ys.size or wider == 5


def test_flags_near_a_position_count_within_the_clipped_box_only():
    flagged = np.zeros((20, 20), dtype=bool)
    flagged[0, 0] = flagged[19, 10] = True
    x = np.array([2.4, 2.6, 10.0, -3.0, 10.0, 15.0])
    y = np.array([2.4, 2.0, 17.0, -3.0, 21.4, 5.0])
    # (2, 2) reaches (0, 0); (2, 3) does not; (17, 10) reaches row 19; (-3, -3) lies 3 px outside
    # (the box would wrap to the far side with negative indices); (21, 10) reaches row 19.
    assert any_flagged_near(flagged, x, y, 2).tolist() == [True, False, True, False, True, False]


def test_flags_in_the_box_of_a_pixel_are_those_of_the_clipped_slice():
    rng = np.random.default_rng(31)
    flagged = rng.random((60, 45)) < 0.004
    rows, columns = rng.integers(-2, 62, 500), rng.integers(-2, 47, 500)
    expected = [
        flagged[max(r - 3, 0) : max(r + 4, 0), max(c - 3, 0) : max(c + 4, 0)].any()
        for r, c in zip(rows, columns)
    ]
    assert any_flagged_in_box(flagged, rows, columns, 3).tolist() == expected
    assert 50 < sum(expected) < 450


def test_boxes_need_one_row_and_one_column_per_position():
    with pytest.raises(ValueError, match="3 rows and 2 columns"):
        any_flagged_in_box(np.zeros((5, 5), bool), np.arange(3), np.arange(2), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_the_sky_subtracted_image_is_the_image_minus_seps_background_map(dtype):
    rng = np.random.default_rng(8)
    image = (rng.normal(900.0, 30.0, (300, 260)) + np.linspace(0, 50, 260)).astype(dtype)
    mask = rng.random(image.shape) < 0.01
    signal, level, rms = subtract_sky(image, mask, 64)
    background = sep.Background(image.astype(np.float64), mask=mask, bw=64, bh=64)
    assert signal.dtype == np.float64
    assert np.array_equal(signal, image.astype(np.float64) - background.back())
    assert (level, rms) == (background.globalback, background.globalrms)


@pytest.mark.parametrize("fwhm", [2.5, 3.0, 5.0, 9.0])
def test_the_seeing_of_a_star_field_is_measured_to_4_percent(fwhm):
    rng = np.random.default_rng(int(fwhm * 10) + 7)
    shape, n = (700, 700), 150
    x, y = rng.uniform(0, shape[1], n), rng.uniform(0, shape[0], n)
    flux = 10 ** rng.uniform(3.0, 5.5, n)
    image = _render_stars(shape, x, y, flux, fwhm / 2.3548)
    err = np.sqrt(25.0 + np.clip(image, 0, None))
    signal = image + rng.normal(0.0, 1.0, shape) * err
    mask = np.zeros(shape, dtype=bool)
    mask[rng.integers(0, shape[0], 300), rng.integers(0, shape[1], 300)] = True  # hot pixels
    measured = estimate_fwhm(signal, err, mask)
    # The pixels integrate the Gaussian: a box of 1 px adds 1/12 px^2 to its variance.
    truth = 2.3548 * np.sqrt((fwhm / 2.3548) ** 2 + 1 / 12)
    # sep's half-light radii read 1-4 % high on pixelised stars (most for the sharpest).
    assert measured == pytest.approx(truth, rel=0.04)


def test_too_few_stars_give_no_seeing():
    signal = np.zeros((100, 100))
    signal[50, 50] = 1000.0
    assert estimate_fwhm(signal, np.ones_like(signal), np.zeros(signal.shape, dtype=bool)) is None
