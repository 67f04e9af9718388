"""The numba L.A.Cosmic against astroscrappy: each building block on random images, and the masks
of simulated and real frames."""

from __future__ import annotations

import datetime as dt

import astroscrappy
import astroscrappy.utils as reference
import numpy as np
import pytest
from astropy.io import fits

from reduction_assets.kernels.lacosmic import (
    LACosmicSettings,
    detect_cosmics,
    dilate3,
    fine_laplacian,
    separable_median,
)
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets_tests.conftest import REAL_ST7, require

RNG = np.random.default_rng(2026)


@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (10, 11), (150, 40), (97, 130)])
@pytest.mark.parametrize(
    "half, theirs", [(2, reference.sepmedfilt5), (3, reference.sepmedfilt7), (4, reference.sepmedfilt9)]
)
def test_the_separable_median_is_astroscrappys(shape, half, theirs):
    image = RNG.normal(100, 10, shape).astype(np.float32)
    assert np.array_equal(separable_median(image, half), theirs(image))


@pytest.mark.parametrize("half", [2, 3, 4])
def test_an_image_with_no_row_a_filter_fits_in_keeps_its_values(half):
    # Only the outermost ``half`` rows on each side: all are edges (astroscrappy's C code is not
    # safe on images this small, so the definition is the reference).
    for shape in [(1, 1), (half, 40), (2 * half, 9)]:
        image = RNG.normal(100, 10, shape).astype(np.float32)
        assert np.array_equal(separable_median(image, half), image)


@pytest.mark.parametrize("shape", [(37, 53), (64, 64)])
def test_the_fine_laplacian_is_astroscrappys_subsample_convolve_clip_rebin(shape):
    image = RNG.normal(100, 30, shape).astype(np.float32)
    laplacian = reference.laplaceconvolve(reference.subsample(image))
    laplacian[laplacian < 0] = 0
    expected = reference.rebin(laplacian)
    assert np.allclose(fine_laplacian(image), expected, rtol=0, atol=1e-4)


def test_dilation_is_astroscrappys():
    mask = RNG.random((41, 47)) > 0.97
    assert np.array_equal(dilate3(mask), reference.dilate3(mask))


def compare(image, variance, readnoise, mask=None):
    settings = LACosmicSettings(readnoise=readnoise)
    theirs, _ = astroscrappy.detect_cosmics(
        image, inmask=mask, invar=variance, gain=1.0, readnoise=readnoise, satlevel=np.inf,
        sigclip=settings.sigclip, sigfrac=settings.sigfrac, objlim=settings.objlim, cleantype="meanmask",
    )  # fmt: skip
    mine = detect_cosmics(image, mask, variance, settings)
    return theirs, mine


def assert_agree(theirs, mine):
    flagged = theirs.sum()
    assert flagged > 20
    assert (theirs & mine).sum() >= 0.995 * flagged
    assert (mine & ~theirs).sum() < 0.005 * flagged


def test_masks_agree_on_a_simulated_science_frame(tmp_path, registry):
    config = SimulationConfig(seed=9, size=(256, 256), n_targets=1, n_dither=1, science_exptime=300)
    night = simulate_night(registry["lcosim"], dt.date(2026, 11, 25), tmp_path, config)
    frame = next(p for p in night.frames if p.name.endswith("science.fits"))
    raw = fits.getdata(frame).astype(np.float32)
    electrons = (raw[:, :-16] - np.float32(1000)) * np.float32(1.6)
    variance = np.maximum(electrons, 0) + np.float32(7.5**2)
    mask = np.zeros(electrons.shape, bool)
    mask[:4, :4] = True  # the registry's bad corner
    assert_agree(*compare(electrons, variance, 7.5, mask))


@pytest.mark.real_data
def test_masks_agree_on_real_st7_frames():
    require(REAL_ST7.is_dir(), f"the real ST-7 frames are not at {REAL_ST7}")
    for path in sorted(REAL_ST7.glob("*.fit"))[:2]:
        electrons = fits.getdata(path).astype(np.float32) * np.float32(2.55)
        electrons -= np.median(electrons)
        variance = np.maximum(electrons, 0) + np.float32(56.0**2)
        assert_agree(*compare(electrons.astype(np.float32), variance.astype(np.float32), 56.0))


def test_overwriting_the_input_gives_the_same_mask_and_spares_other_inputs():
    rng = np.random.default_rng(17)
    image = rng.normal(200.0, 12.0, (80, 90)).astype(np.float32)
    image[rng.integers(5, 75, 40), rng.integers(5, 85, 40)] += np.float32(3000.0)  # hits
    variance = np.maximum(image, 0) + np.float32(49.0)
    settings = LACosmicSettings(readnoise=7.0)
    expected = detect_cosmics(image, None, variance, settings)
    assert expected.sum() >= 40
    # float64 planes cannot be cleaned in place: they are copied and kept as they are.
    image64, variance64 = image.astype(np.float64), variance.astype(np.float64)
    kept = image64.copy()
    assert np.array_equal(detect_cosmics(image64, None, variance64, settings, overwrite_input=True), expected)
    assert np.array_equal(image64, kept)
    own, own_var = image.copy(), variance.copy()
    assert np.array_equal(detect_cosmics(own, None, own_var, settings, overwrite_input=True), expected)
    # The hits were cleaned in the caller's planes (and only there).
    assert not np.array_equal(own, image)
    assert np.array_equal(own[~expected], image[~expected])
    assert np.array_equal(detect_cosmics(image, None, variance, settings), expected)
