"""Calibration steps on arrays."""

import numpy as np
import pytest

from reduction_assets.reduction import calibrate


def test_overscan_median_follows_each_rows_level():
    raw = np.zeros((4, 10), np.float32)
    raw[:, 8:] = np.array([100, 101, 102, 103])[:, None]
    raw[2, 9] = 5000  # a cosmic ray in the overscan
    levels = calibrate.overscan_levels(raw, (slice(0, 4), slice(7, 10)))
    np.testing.assert_array_equal(levels, [100, 101, 102, 103])


def test_overscan_polynomial_smooths_a_linear_drift():
    rows = np.arange(200)
    raw = (1000 + 0.01 * rows)[:, None] + np.random.default_rng(0).normal(0, 3, (200, 20))
    levels = calibrate.overscan_levels(raw, (slice(0, 200), slice(0, 20)), method="poly", order=1)
    np.testing.assert_allclose(levels, 1000 + 0.01 * rows, atol=0.3)


def test_dark_rate_scales_with_exposure_time():
    image = np.full((2, 2), 100.0, np.float32)
    rate = np.full((2, 2), 0.5, np.float32)
    np.testing.assert_allclose(calibrate.subtract_dark(image, rate, 60.0), 70.0)


def test_bias_including_darks_apply_at_their_own_time_and_scale_with_a_bias():
    master = np.full((2, 2), 1100.0, np.float32)  # 1000 e- bias + 100 e- in 300 s
    same = calibrate.dark_for_exposure(master, master_exptime=300, exptime=300, includes_bias=True)
    np.testing.assert_array_equal(same, master)
    bias = np.full((2, 2), 1000.0, np.float32)
    scaled = calibrate.dark_for_exposure(
        master, master_exptime=300, exptime=600, includes_bias=True, bias=bias
    )
    np.testing.assert_allclose(scaled, 1200.0)
    with pytest.raises(ValueError, match="without a bias level"):
        calibrate.dark_for_exposure(master, master_exptime=300, exptime=600, includes_bias=True)


def test_illuminated_level_ignores_unilluminated_corners():
    image = np.full((100, 100), 10000.0)
    image[:30, :30] = 5.0  # a vignetted corner
    assert calibrate.illuminated_level(image) == 10000.0


def test_a_flat_with_no_illumination_cannot_be_normalised():
    with pytest.raises(ValueError, match="positive"):
        calibrate.normalise_flat(np.zeros((3, 3)), calibrate.illuminated_level(np.zeros((3, 3))))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="bias shape"):
        calibrate.subtract_bias(np.zeros((3, 3)), np.zeros((3, 4)))
