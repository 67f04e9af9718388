"""Cosmic rays against the simulator's truth: flags on real hits only, none on stars, and star fluxes
right whatever their flags."""

import datetime as dt

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from reduction_assets.reduction.cosmics import (
    CosmicSettings,
    fill_masked,
    grow_within,
    lacosmic_candidates,
    sharper_than_psf,
)
from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.science import ScienceSettings, calibrate_science
from reduction_assets.reduction.sources import COSMIC_RAY_FILLED, SATURATED_SOURCE, extract_sources
from reduction_assets.simulator.night import SimulationConfig, _render_stars, simulate_night
from reduction_assets_tests.reduction.frames import build, inputs

SIZE = 384


@pytest.fixture(scope="module")
def night(registry, tmp_path_factory):
    """A 384x384 night (a seed no other test uses) and its masters."""
    lco = registry["lcosim"]
    simulated = simulate_night(
        lco,
        dt.date(2026, 11, 22),
        tmp_path_factory.mktemp("cosmics"),
        SimulationConfig(seed=71, size=(SIZE, SIZE), filters=("rp",), n_dither=2),
    )
    bias = build("bias", inputs(simulated, "bias"), lco).master
    dark = build("dark", inputs(simulated, "dark"), lco, bias=bias).master
    flat = build("flat", inputs(simulated, "flat", "rp"), lco, bias=bias, dark=dark).master
    return lco, simulated, bias, dark, flat


@pytest.fixture(scope="module")
def frames(night):
    """Its four science frames, reduced, with truth."""
    lco, night, bias, dark, flat = night
    truth = night.truth
    reduced = []
    for index, (path, frame) in enumerate(zip(night.frames, truth.frames)):
        if frame.frame_type != "science":
            continue
        raw = fits.getdata(path).astype(np.float32)
        result = calibrate_science(
            raw, instrument=lco, geometry=lco.geometry(raw.shape, (1, 1)), exptime=frame.exptime,
            bias=bias, dark=dark, flat=flat,
        )  # fmt: skip
        stars = truth.stars[truth.stars["target"] == frame.target]
        x, y = WCS(fits.getheader(path)).all_world2pix(stars["ra"], stars["dec"], 0)
        star_image = _render_stars((SIZE, SIZE), x, y, stars["rate_rp"], 3.0 / 2.3548) * frame.exptime
        hits = truth.cosmic_rays[truth.cosmic_rays["frame"] == index]
        deposit = np.zeros((SIZE, SIZE))
        np.add.at(deposit, (hits["y"], hits["x"]), hits["electrons"])
        flux = stars["rate_rp"] * frame.exptime
        reduced.append((result, star_image + 20.0 * frame.exptime, deposit, x, y, flux))
    return reduced


def test_flagged_pixels_are_cosmic_rays_not_pieces_of_stars(frames):
    flagged = consistent = 0
    for result, model, *_ in frames:
        hit = (result.dq & DQ.COSMIC_RAY) != 0
        flagged += hit.sum()
        # A false flag: the pixel's value agrees with the model of sky and stars within 5 sigma.
        consistent += np.count_nonzero(hit & (np.abs(result.sci - model) < 5 * result.err))
    assert flagged > 500
    assert consistent / flagged <= 0.05  # L.A.Cosmic alone: 40-60 %


def test_no_core_of_an_unsaturated_star_is_flagged(frames):
    cores = 0
    for result, _, deposit, x, y, flux in frames:
        hit = ((result.dq & DQ.COSMIC_RAY) != 0) & (deposit == 0)
        for i in np.flatnonzero((flux > 1e4) & (x > 4) & (x < SIZE - 5) & (y > 4) & (y < SIZE - 5)):
            yi, xi = round(y[i]), round(x[i])
            if not (result.dq[yi - 3 : yi + 4, xi - 3 : xi + 4] & DQ.SATURATED).any():
                cores += np.count_nonzero(hit[yi - 2 : yi + 3, xi - 2 : xi + 3])
    assert cores == 0


def test_cosmic_rays_on_clean_sky_are_found(frames):
    on_sky = found = 0
    for result, model, deposit, *_ in frames:
        sky = (model - model.min()) < 5.0  # e- of starlight: clean sky
        hits = (deposit > 0) & sky & (result.dq & DQ.SATURATED == 0)
        on_sky += hits.sum()
        found += np.count_nonzero(hits & ((result.dq & DQ.COSMIC_RAY) != 0))
    assert on_sky > 500 and found / on_sky >= 0.95


def test_star_fluxes_are_right_whatever_their_flags(frames):
    ratios, significance, filled = [], [], []
    for result, _, _, x, y, flux in frames:
        catalog, _ = extract_sources(result.sci, result.err, result.dq)
        for i in range(len(flux)):
            if not (12 < x[i] < SIZE - 13 and 12 < y[i] < SIZE - 13):
                continue
            distance = np.hypot(x - x[i], y - y[i])
            if ((distance > 0) & (distance < 15) & (flux > 0.003 * flux[i])).any():
                continue  # not isolated
            nearest = np.hypot(catalog["x"] - x[i], catalog["y"] - y[i])
            j = np.argmin(nearest)
            if nearest[j] > 1 or catalog["flag"][j] & SATURATED_SOURCE:
                continue
            if catalog["flux"][j] < 20 * catalog["flux_err"][j]:
                continue
            ratios.append(catalog["flux"][j] / flux[i])
            significance.append(catalog["flux"][j] / catalog["flux_err"][j])
            filled.append(bool(catalog["flag"][j] & COSMIC_RAY_FILLED))
    ratios, significance, filled = np.array(ratios), np.array(significance), np.array(filled)
    assert len(ratios) > 150 and filled.sum() > 30
    assert np.median(ratios) == pytest.approx(1.0, abs=0.01)
    # Photon noise alone puts a star of S/N 20 at 0.92 of its flux one time in twenty: the 5th
    # percentile is judged where the noise allows 0.97 (S/N >= 50), for all stars and hit ones alike.
    bright = significance >= 50
    assert np.percentile(ratios[bright], 5) >= 0.97
    assert np.percentile(ratios[bright & filled], 5) >= 0.97
    assert ratios.min() > 0.85  # was 0.5 when hits were masked and the sum rescaled by area


def test_the_numba_backend_makes_astroscrappys_products(night):
    lco, simulated, bias, dark, flat = night
    path = next(p for p in simulated.frames if p.name.endswith("science.fits"))
    raw = fits.getdata(path).astype(np.float32)
    results = [
        calibrate_science(
            raw,
            instrument=lco,
            geometry=lco.geometry(raw.shape, (1, 1)),
            exptime=60.0,
            bias=bias,
            dark=dark,
            flat=flat,
            settings=ScienceSettings(cosmics=CosmicSettings(backend=backend)),
        )
        for backend in ("numba", "astroscrappy")
    ]
    assert ((results[0].dq & DQ.COSMIC_RAY) != 0).sum() > 20
    assert np.array_equal(results[0].dq, results[1].dq)
    assert np.array_equal(results[0].sci, results[1].sci) and np.array_equal(results[0].err, results[1].err)


def test_an_unknown_cosmic_ray_backend_is_refused():
    with pytest.raises(ValueError, match="cosmic-ray backend 'iraf': expected numba or astroscrappy"):
        lacosmic_candidates(np.zeros((20, 20)), np.ones((20, 20)), np.zeros((20, 20), bool), 5.0,
                            CosmicSettings(backend="iraf"))  # fmt: skip


def test_a_gaussian_star_is_never_sharper_than_its_psf_but_a_hit_is():
    y, x = np.mgrid[0:41, 0:41]
    star = 2e5 / (2 * np.pi * 1.27**2) * np.exp(-((x - 20.3) ** 2 + (y - 19.8) ** 2) / (2 * 1.27**2))
    variance = 1200.0 + star
    assert not sharper_than_psf(star, variance, psf_fwhm=2.5, sharpness_sigma=3.0).any()
    hit = star.copy()
    hit[30, 10] += 800.0  # a modest hit on the sky, 20 sigma
    hit[21, 20] += 30000.0  # and one on the star's core
    sharp = sharper_than_psf(hit, variance, psf_fwhm=2.5, sharpness_sigma=3.0)
    assert sharp[30, 10] and sharp[21, 20] and sharp.sum() == 2


def test_growing_takes_one_ring_of_candidates_only():
    seeds = np.zeros((7, 7), bool)
    seeds[3, 3] = True
    allowed = np.ones((7, 7), bool)
    assert grow_within(seeds, allowed, steps=1).sum() == 9
    assert grow_within(seeds, allowed).sum() == 1


def test_filled_pixels_take_the_mean_of_their_usable_neighbours():
    image = np.arange(49, dtype=np.float32).reshape(7, 7)
    masked = np.zeros((7, 7), bool)
    masked[3, 3] = True
    usable = np.ones((7, 7), bool)
    usable[2, 2] = False
    filled = fill_masked(image, masked, usable, half_width=1)
    neighbours = [image[y, x] for y in (2, 3, 4) for x in (2, 3, 4) if (y, x) not in ((3, 3), (2, 2))]
    assert filled[3, 3] == pytest.approx(np.mean(neighbours))
    assert np.array_equal(np.delete(filled.ravel(), 24), np.delete(image.ravel(), 24))


def test_a_filled_copy_keeps_its_type_and_an_own_plane_is_filled_in_place():
    rng = np.random.default_rng(5)
    signal = rng.normal(0.0, 10.0, (30, 40))
    err = rng.uniform(3.0, 4.0, (30, 40)).astype(np.float32)
    masked = rng.random((30, 40)) < 0.05
    usable = rng.random((30, 40)) > 0.02
    filled_err = fill_masked(err, masked, usable)
    # The float64 mean rounded once to float32: as filling in float64 and converting after.
    assert filled_err.dtype == np.float32
    assert np.array_equal(filled_err, fill_masked(err.astype(np.float64), masked, usable).astype(np.float32))
    filled = fill_masked(signal, masked, usable)
    assert np.array_equal(filled[~masked], signal[~masked]) and not np.array_equal(filled, signal)
    own = signal.copy()
    assert fill_masked(own, masked, usable, overwrite_input=True) is own
    assert np.array_equal(own, filled)


def test_filling_refuses_masks_of_another_shape():
    masked = np.zeros((5, 5), bool)
    with pytest.raises(ValueError, match="differ"):
        fill_masked(np.zeros((5, 6)), masked, ~masked)
