"""Resampling: the control-grid mapping against the exact transform, agreement with reproject,
flux, variance and DQ."""

import numpy as np
import pytest
from astropy.wcs import WCS

from reduction_assets.kernels import pixel_map, resample

SCALE = 0.389 / 3600  # degrees per pixel


def tan_wcs(ra=30.0, dec=-20.0, crpix=(128.5, 128.5), scale=SCALE, rotation_deg=0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    wcs.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    return wcs


def sip_wcs(strength=2e-5) -> WCS:
    """A TAN-SIP WCS with quadratic and cubic distortion (several pixels at the corners)."""
    header = tan_wcs(crpix=(200.5, 180.5)).to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"] = header["B_ORDER"] = 3
    terms = {"A_2_0": strength, "A_0_2": -strength / 2, "A_1_1": strength / 3, "A_3_0": 2e-8,
             "B_0_2": strength, "B_2_0": strength / 4, "B_1_1": -strength / 2, "B_0_3": -1e-8}  # fmt: skip
    for name, value in terms.items():
        header[name] = value
    return WCS(header)


def exact_positions(source, target, rows, columns):
    ra, dec = target.all_pix2world(columns, rows, 0)
    x, y = source.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100)
    return x, y


def star_field(shape=(256, 256), seed=3, fwhm=3.0, sky=1000.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = sky + 150 * np.sin(xx / 31.0) * np.cos(yy / 17.0)
    sigma = fwhm / 2.3548
    for _ in range(40):
        x0, y0 = rng.uniform(10, shape[1] - 10), rng.uniform(10, shape[0] - 10)
        flux = rng.uniform(2e3, 5e4)
        image += flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return image.astype(np.float32)


@pytest.mark.parametrize("case", ["shift_rotate_scale", "sip_to_tan", "tan_to_sip"])
def test_the_interpolated_mapping_is_within_a_hundredth_of_a_pixel_of_the_exact_one(case):
    source, target = {
        "shift_rotate_scale": (
            tan_wcs(),
            tan_wcs(ra=30.002, dec=-19.999, scale=SCALE * 1.07, rotation_deg=7),
        ),
        "sip_to_tan": (sip_wcs(), tan_wcs(crpix=(190.0, 170.0))),
        "tan_to_sip": (tan_wcs(), sip_wcs()),
    }[case]
    shape = (400, 380)
    mapping = pixel_map(source, target, shape, max_error=0.01)
    rng = np.random.default_rng(0)
    rows, columns = rng.uniform(0, shape[0] - 1, 20000), rng.uniform(0, shape[1] - 1, 20000)
    x, y = mapping.positions(rows, columns)
    ex, ey = exact_positions(source, target, rows, columns)
    error = np.hypot(x - ex, y - ey)
    assert error.max() <= 0.01
    assert mapping.step < 256 if case != "shift_rotate_scale" else True  # distortion needs a finer grid
    assert mapping.error <= 0.01


def test_a_distortion_too_strong_for_any_grid_is_refused_clearly():
    with pytest.raises(ValueError, match="cannot be interpolated within"):
        pixel_map(sip_wcs(), tan_wcs(), (64, 64), max_error=1e-12)


def test_bilinear_mode_agrees_with_reproject_interp_away_from_the_edges():
    reproject = pytest.importorskip("reproject")
    image = star_field()
    source = tan_wcs()
    target = tan_wcs(ra=30.0011, dec=-20.0007, crpix=(120.3, 133.9), scale=SCALE * 1.03, rotation_deg=2.5)
    ours = resample(
        image, pixel_map(source, target, (256, 256), max_error=1e-4), kernel="bilinear", conserve_flux=False
    )
    theirs, _ = reproject.reproject_interp((image, source), target, shape_out=(256, 256), order="bilinear")
    inner = (slice(8, -8), slice(8, -8))
    finite = np.isfinite(theirs[inner])
    relative = np.abs(ours.sci[inner][finite] - theirs[inner][finite]) / np.abs(theirs[inner][finite])
    assert finite.mean() > 0.95
    assert relative.max() <= 1e-4


def test_the_identity_mapping_returns_the_image_and_its_flags_unchanged():
    image = star_field(shape=(64, 80))
    dq = np.zeros(image.shape, np.uint16)
    dq[10, 20] = 128
    out = resample(image, pixel_map(tan_wcs(), tan_wcs(), image.shape), dq=dq)
    np.testing.assert_array_equal(out.sci, image)
    np.testing.assert_array_equal(out.dq, dq)


@pytest.mark.parametrize("kernel", ["lanczos3", "bilinear"])
def test_a_stars_flux_is_conserved_onto_a_finer_rotated_grid(kernel):
    yy, xx = np.mgrid[:128, :128]
    sigma, flux = 3.0 / 2.3548, 1e5
    star = flux / (2 * np.pi * sigma**2) * np.exp(-((xx - 63.3) ** 2 + (yy - 64.6) ** 2) / (2 * sigma**2))
    source = tan_wcs(crpix=(64.5, 64.5))
    target = tan_wcs(crpix=(85.5, 85.5), scale=SCALE * 0.75, rotation_deg=10)  # 1.78x the pixels
    mapping = pixel_map(source, target, (171, 171))
    out = resample(star.astype(np.float32), mapping, kernel=kernel)
    assert out.sci.sum() == pytest.approx(flux, rel=1e-3)
    assert np.median(mapping.area) == pytest.approx(0.75**2, rel=1e-6)
    surface = resample(star.astype(np.float32), mapping, kernel=kernel, conserve_flux=False)
    assert surface.sci.sum() == pytest.approx(flux / 0.75**2, rel=1e-3)


def test_variance_is_propagated_with_the_squared_weights():
    rng = np.random.default_rng(4)
    sigma = 10.0
    source = tan_wcs()
    target = tan_wcs(ra=30.00003, dec=-19.99997, rotation_deg=1.0)  # fractional shifts everywhere
    mapping = pixel_map(source, target, (256, 256))
    noise = rng.normal(0, sigma, (256, 256)).astype(np.float32)
    out = resample(noise, mapping, variance=np.full(noise.shape, sigma**2, np.float32))
    inner = (slice(8, -8), slice(8, -8))
    # the scatter of the resampled pixels is what the propagated variance says (correlations aside)
    assert np.mean(out.sci[inner] ** 2) == pytest.approx(np.mean(out.variance[inner]), rel=0.03)
    assert np.mean(out.variance[inner]) < sigma**2  # interpolation averages


@pytest.mark.parametrize(("kernel", "footprint"), [("lanczos3", 6), ("bilinear", 2)])
def test_a_flag_carries_over_to_every_output_pixel_whose_kernel_covers_it(kernel, footprint):
    image = np.full((64, 64), 100.0, np.float32)
    dq = np.zeros(image.shape, np.uint16)
    dq[30, 30] = 128
    image[30, 30] = 1e6  # a cosmic ray: flagged, ignored in the value
    target = tan_wcs(ra=30.0 + 0.3 * SCALE / np.cos(np.radians(20)), dec=-20.0 + 0.4 * SCALE)
    out = resample(
        image, pixel_map(tan_wcs(), target, image.shape), dq=dq, kernel=kernel, ignore_bits=128, no_data_bit=1
    )
    flagged = np.argwhere(out.dq & 128)
    assert len(flagged) == footprint**2
    # the hit entered no value; where it carried more than half the kernel's weight there is no data
    inner = (slice(8, -8), slice(8, -8))
    with_data = (out.dq[inner] & 1) == 0
    assert np.count_nonzero(~with_data) <= 1
    assert np.abs(out.sci[inner][with_data] - 100.0).max() < 1e-3


def test_pixels_outside_the_input_have_no_data_and_no_nan():
    image = np.ones((32, 32), np.float32)
    target = tan_wcs(ra=30.0 + 20 * SCALE / np.cos(np.radians(20)))  # 20 px east
    out = resample(image, pixel_map(tan_wcs(), target, (32, 32)), no_data_bit=1)
    assert np.isfinite(out.sci).all() and np.isfinite(out.variance).all()
    outside = (out.dq & 1) != 0
    assert 0.55 < outside.mean() < 0.7
    assert (out.sci[outside] == 0).all()


def test_row_blocks_give_the_rows_of_the_whole():
    image = star_field(shape=(64, 64))
    mapping = pixel_map(tan_wcs(), tan_wcs(rotation_deg=3), (64, 64))
    whole = resample(image, mapping)
    np.testing.assert_array_equal(resample(image, mapping, rows=(10, 30)).sci, whole.sci[10:30])


def test_bad_arguments_are_refused():
    mapping = pixel_map(tan_wcs(), tan_wcs(), (8, 8))
    with pytest.raises(ValueError, match="kernel"):
        resample(np.ones((8, 8)), mapping, kernel="cubic")
    with pytest.raises(ValueError, match="variance shape"):
        resample(np.ones((8, 8)), mapping, variance=np.ones((4, 4)))
    with pytest.raises(ValueError, match="max_error"):
        pixel_map(tan_wcs(), tan_wcs(), (8, 8), max_error=0)
