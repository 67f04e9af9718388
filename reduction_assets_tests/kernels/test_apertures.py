"""Half-light radii, circular sums and windowed positions (sep's, bit for bit, on numba threads)
and flagged pixels in circles."""

import numpy as np
import pytest
import sep

from reduction_assets.kernels.apertures import (
    APERTURE_HAS_MASKED,
    APERTURE_TRUNCATED,
    WINDOW_MIN_SIGMA,
    any_in_circles,
    circle_overlap,
    flux_radius,
    sum_circle,
    windowed_positions,
)
from reduction_assets.simulator.night import _render_stars


@pytest.fixture(scope="module")
def star_field():
    """A noisy field of 400 stars of 3.2 px FWHM with hot pixels masked, and positions near the
    stars, off them, on the edges and outside the image."""
    rng = np.random.default_rng(41)
    shape, n = (600, 500), 400
    x, y = rng.uniform(-3, shape[1] + 3, n), rng.uniform(-3, shape[0] + 3, n)
    image = _render_stars(shape, x, y, 10 ** rng.uniform(2.5, 5.5, n), 3.2 / 2.3548)
    image += rng.normal(0.0, 5.0, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rng.integers(0, shape[0], 500), rng.integers(0, shape[1], 500)] = True
    positions_x = np.concatenate([x + rng.normal(0, 0.3, n), [0.0, -0.4, 499.6, 250.0, 520.0]])
    positions_y = np.concatenate([y + rng.normal(0, 0.3, n), [0.0, 300.0, 599.9, -1.2, 300.0]])
    rmax = rng.uniform(0.5, 30.0, positions_x.size)
    return image, mask, positions_x, positions_y, rmax


@pytest.mark.parametrize("subpix", [1, 5, 7])
@pytest.mark.parametrize("masked", [False, True])
def test_radii_and_flags_are_seps_bit_for_bit(star_field, subpix, masked):
    image, mask, x, y, rmax = star_field
    mask = mask if masked else None
    for fraction in (0.5, 0.9):
        theirs, their_flags = sep.flux_radius(image, x, y, rmax, fraction, mask=mask, subpix=subpix)
        ours, our_flags = flux_radius(image, x, y, rmax, fraction, mask=mask, subpix=subpix)
        assert np.array_equal(ours, theirs)
        assert np.array_equal(our_flags, their_flags)
    assert (our_flags & APERTURE_TRUNCATED).any()
    assert (our_flags & APERTURE_HAS_MASKED).any() == masked


def test_radii_out_to_more_than_90_pixels_are_seps_too(star_field):
    # Annuli wider than a pixel's diagonal (rmax / 64 > 1.4144): only pixels near an annulus' edge
    # are sub-sampled, the others counted whole.
    image, mask, x, y, _ = star_field
    x, y = x[::10], y[::10]
    rmax = np.random.default_rng(9).uniform(85.0, 140.0, x.size)
    theirs, their_flags = sep.flux_radius(image, x, y, rmax, 0.5, mask=mask, subpix=5)
    ours, our_flags = flux_radius(image, x, y, rmax, 0.5, mask=mask, subpix=5)
    assert np.array_equal(ours, theirs) and np.array_equal(our_flags, their_flags)


def test_float32_images_are_read_as_sep_reads_them(star_field):
    image, mask, x, y, rmax = star_field
    image = image.astype(np.float32)
    assert np.array_equal(
        flux_radius(image, x, y, rmax, 0.5, mask=mask)[0],
        sep.flux_radius(image, x, y, rmax, 0.5, mask=mask)[0],
    )


def test_the_half_light_radius_of_a_gaussian_star_is_half_its_fwhm():
    sigma = 3.0
    image = _render_stars((101, 101), np.array([50.3]), np.array([49.8]), np.array([1e6]), sigma)
    radius, flags = flux_radius(image, np.array([50.3]), np.array([49.8]), np.array([45.0]), 0.5)
    # The pixels integrate the Gaussian: a box of 1 px adds 1/12 px^2 to its variance.
    assert radius[0] == pytest.approx(1.17741 * np.sqrt(sigma**2 + 1 / 12), rel=0.005)
    assert flags[0] == 0


def test_a_source_without_an_aperture_gets_nan():
    image = np.ones((20, 20))
    radius, _ = flux_radius(
        image, np.array([5.0, np.nan, 5.0]), np.array([5.0, 5.0, 5.0]), np.array([3.0, 3.0, 0.0]), 0.5
    )
    assert radius[0] == pytest.approx(3.0 / np.sqrt(2.0), rel=0.02)  # half the area of the disc
    assert np.isnan(radius[1:]).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda im: flux_radius(im, [1.0], [1.0], [2.0], 0.5, mask=np.zeros((3, 3), bool)), "mask has shape"),
        (lambda im: flux_radius(im, [1.0, 2.0], [1.0], [2.0], 0.5), "one value per source"),
        (lambda im: flux_radius(im, [1.0], [1.0], [2.0], 0.5, subpix=0), "subpix"),
        (lambda im: flux_radius(im[0], [1.0], [1.0], [2.0], 0.5), "2-d"),
    ],
)
def test_bad_input_is_refused_with_the_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.ones((10, 10)))


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0, 7.0722, 9.3])
def test_flagged_pixels_in_circles_are_those_seps_circular_sum_counts(radius):
    rng = np.random.default_rng(int(radius * 100))
    flagged = rng.random((150, 120)) < 0.004
    x, y = rng.uniform(-10, 130, 2000), rng.uniform(-10, 160, 2000)
    # On pixel centres a neighbour lies exactly at an integer radius: it is not inside (<, as sep).
    x[:400], y[:400] = np.round(x[:400]), np.round(y[:400])
    summed, _, _ = sep.sum_circle(flagged.astype(np.float64), x, y, radius, subpix=1)
    found = any_in_circles(flagged, x, y, radius)
    assert np.array_equal(found, summed > 0)
    assert 0 < found.sum() < found.size


def test_a_pixel_at_exactly_the_radius_is_outside_the_circle():
    flagged = np.zeros((9, 9), dtype=bool)
    flagged[4, 7] = True
    assert any_in_circles(flagged, [4.0, 4.0, np.nan], [4.0, 4.0, 4.0], 3.0).tolist() == [False, False, False]
    assert any_in_circles(flagged, [4.0], [4.0], 3.0001).tolist() == [True]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: any_in_circles(np.zeros(5, bool), [1.0], [1.0], 2.0), "2-d"),
        (lambda: any_in_circles(np.zeros((5, 5), bool), [1.0, 2.0], [1.0], 2.0), "one value per source"),
        (lambda: any_in_circles(np.zeros((5, 5), bool), [1.0], [1.0], 0.0), "radius must be positive"),
        (lambda: any_in_circles(np.zeros((5, 5), bool), [1.0], [1.0], np.nan), "radius must be positive"),
    ],
)
def test_circles_refuse_bad_input_with_the_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("subpix", [0, 1, 5, 7])
@pytest.mark.parametrize("masked", [False, True])
def test_circular_sums_errors_and_flags_are_seps_bit_for_bit(star_field, subpix, masked):
    image, mask, x, y, _ = star_field
    mask = mask if masked else None
    rng = np.random.default_rng(subpix)
    err = rng.uniform(1.0, 9.0, image.shape).astype(np.float32)
    # Radii per source from none to wider than a star, and one radius for all (pixel centres
    # exactly on a radius of 3 about integer positions).
    for r in (rng.uniform(0.0, 15.0, x.size), 3.0, 0.0):
        theirs = sep.sum_circle(image, x, y, r, err=err, mask=mask, subpix=subpix)
        ours = sum_circle(image, x, y, r, err=err, mask=mask, subpix=subpix)
        for mine, sep_value in zip(ours, theirs, strict=True):
            assert np.array_equal(mine, sep_value, equal_nan=True)
    assert (ours[2] & APERTURE_TRUNCATED).any()
    assert (ours[2] & APERTURE_HAS_MASKED).any() == masked


def test_circular_sums_without_errors_and_of_float32_images_are_seps(star_field):
    image, mask, x, y, _ = star_field
    for data, err in ((image.astype(np.float32), None), (image, np.full(image.shape, 2.5))):
        theirs = sep.sum_circle(data, x, y, 4.5, err=err, mask=mask, subpix=5)
        ours = sum_circle(data, x, y, 4.5, err=err, mask=mask, subpix=5)
        for mine, sep_value in zip(ours, theirs, strict=True):
            assert np.array_equal(mine, sep_value, equal_nan=True)


def test_a_circular_sum_of_a_flat_image_is_the_circles_area():
    flux, error, flags = sum_circle(
        np.ones((40, 40)), [20.3], [19.6], 6.0, err=np.full((40, 40), 2.0), subpix=0
    )
    assert flux[0] == pytest.approx(np.pi * 36.0, rel=1e-12)
    assert error[0] == pytest.approx(2.0 * np.sqrt(np.pi * 36.0), rel=1e-12)
    assert flags[0] == 0


def test_the_exact_overlap_of_pixels_and_a_circle_adds_up_to_its_area():
    for r, (cx, cy) in ((0.3, (0.1, -0.2)), (2.5, (0.5, 0.5)), (7.25, (-0.37, 0.81))):
        total = sum(
            circle_overlap(i - 0.5 - cx, j - 0.5 - cy, i + 0.5 - cx, j + 0.5 - cy, r)
            for i in range(-9, 10)
            for j in range(-9, 10)
        )
        assert total == pytest.approx(np.pi * r * r, rel=1e-12)
    assert circle_overlap(-0.5, -0.5, 0.5, 0.5, 10.0) == 1.0
    assert circle_overlap(-0.5, -0.5, 0.5, 0.5, 0.0) == 0.0


@pytest.mark.parametrize("subpix", [0, 5, 11])
@pytest.mark.parametrize("masked", [False, True])
def test_windowed_positions_and_flags_are_seps_bit_for_bit(star_field, subpix, masked):
    image, mask, x, y, _ = star_field
    mask = mask if masked else None
    # Windows narrower than sep's floor (raised to it), of a star and wider than one.
    sig = np.random.default_rng(3).uniform(0.1, 4.0, x.size)
    for s in (sig, 1.36):
        theirs = sep.winpos(image, x, y, s, mask=mask, subpix=subpix)
        ours = windowed_positions(image, x, y, s, mask=mask, subpix=subpix)
        for mine, sep_value in zip(ours, theirs, strict=True):
            assert np.array_equal(mine, sep_value, equal_nan=True)
    assert (ours[2] & APERTURE_TRUNCATED).any()
    assert (ours[2] & APERTURE_HAS_MASKED).any() == masked
    narrow = windowed_positions(image, x, y, WINDOW_MIN_SIGMA / 3, mask=mask, subpix=subpix)
    assert np.array_equal(
        narrow[0], windowed_positions(image, x, y, WINDOW_MIN_SIGMA, mask=mask, subpix=subpix)[0]
    )


def test_the_windowed_position_of_a_gaussian_star_is_its_centre():
    image = _render_stars((61, 61), np.array([30.27]), np.array([29.61]), np.array([1e6]), 2.0)
    wx, wy, flags = windowed_positions(image, [31.0], [29.0], 2.0, subpix=0)
    assert (wx[0], wy[0]) == pytest.approx((30.27, 29.61), abs=0.002)
    assert flags[0] == 0


def test_sums_and_windows_of_a_source_without_a_position_are_nan():
    image = np.ones((20, 20))
    flux, error, _ = sum_circle(image, [5.0, np.nan], [5.0, 5.0], 2.0)
    wx, wy, _ = windowed_positions(image, [np.inf, 5.0], [5.0, 5.0], 1.0)
    assert np.isfinite(flux[0]) and np.isnan(flux[1]) and np.isnan(error[1])
    assert np.isnan(wx[0]) and np.isnan(wy[0]) and np.isfinite(wx[1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda im: sum_circle(im, [1.0], [1.0], -1.0), "r must be finite and not negative"),
        (lambda im: sum_circle(im, [1.0], [1.0], np.nan), "r must be finite"),
        (
            lambda im: sum_circle(im, [1.0, 2.0], [1.0, 2.0], [1.0, 2.0, 3.0]),
            "r must be one value or one per",
        ),
        (lambda im: sum_circle(im, [1.0], [1.0], 2.0, subpix=-1), "subpix"),
        (lambda im: sum_circle(im, [1.0], [1.0], 2.0, err=np.ones((3, 3))), "err has shape"),
        (lambda im: sum_circle(im, [1.0], [1.0], 2.0, mask=np.zeros((3, 3), bool)), "mask has shape"),
        (lambda im: sum_circle(im, [1.0, 2.0], [1.0], 2.0), "one value per source"),
        (lambda im: windowed_positions(im[0], [1.0], [1.0], 1.0), "2-d"),
        (lambda im: windowed_positions(im, [1.0], [1.0], -1.0), "sig must be finite and not negative"),
        (lambda im: windowed_positions(im, [1.0], [1.0], 1.0, subpix=-2), "subpix"),
    ],
)
def test_sums_and_windows_refuse_bad_input_with_the_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.ones((10, 10)))
