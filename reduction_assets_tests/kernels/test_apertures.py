"""Half-light radii (sep's FLUX_RADIUS, bit for bit, on numba threads) and flagged pixels in circles."""

import numpy as np
import pytest
import sep

from reduction_assets.kernels.apertures import (
    APERTURE_HAS_MASKED,
    APERTURE_TRUNCATED,
    any_in_circles,
    flux_radius,
)
from reduction_assets.simulate import _render_stars


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
