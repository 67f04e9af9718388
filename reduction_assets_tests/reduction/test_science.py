"""A reduced science frame compared with what the simulator injected."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.masters import Master
from reduction_assets.reduction.science import NotReducible, calibrate_science
from reduction_assets.reduction.sources import SATURATED_SOURCE, extract_sources
from reduction_assets.simulator.night import _render_stars
from reduction_assets_tests.reduction.frames import build, inputs


@pytest.fixture(scope="module")
def reduced(registry, lcosim_night):
    """Every rp science frame of the night, reduced, with the model of what was injected."""
    lco, truth = registry["lcosim"], lcosim_night.truth
    bias = build("bias", inputs(lcosim_night, "bias"), lco).master
    dark = build("dark", inputs(lcosim_night, "dark"), lco, bias=bias).master
    flat = build("flat", inputs(lcosim_night, "flat", "rp"), lco, bias=bias, dark=dark).master
    frames = []
    for index, (path, frame) in enumerate(zip(lcosim_night.frames, truth.frames)):
        if frame.frame_type != "science" or frame.filter != "rp":
            continue
        raw = fits.getdata(path).astype(np.float32)
        header = fits.getheader(path)
        geometry = lco.geometry(raw.shape, (1, 1))
        result = calibrate_science(
            raw, instrument=lco, geometry=geometry, exptime=frame.exptime, bias=bias, dark=dark, flat=flat
        )
        stars = truth.stars[truth.stars["target"] == frame.target]
        x, y = WCS(header).all_world2pix(stars["ra"], stars["dec"], 0)
        model = (_render_stars((128, 128), x, y, stars["rate_rp"], 3.0 / 2.3548) + 20.0) * frame.exptime
        crs = truth.cosmic_rays[truth.cosmic_rays["frame"] == index]
        frames.append((result, model, stars, x, y, frame, crs))
    return frames, (bias, dark, flat)


def test_sci_equals_the_injected_sky_and_stars_within_the_noise(reduced):
    for result, model, *_ in reduced[0]:
        clean = result.dq == 0
        normalised = (result.sci - model)[clean] / result.err[clean]
        assert abs(np.median(normalised)) < 0.1


def test_err_matches_the_actual_scatter(reduced):
    widths = []
    for result, model, *_ in reduced[0]:
        clean = result.dq == 0
        widths.append(mad_std((result.sci - model)[clean] / result.err[clean]))
    assert np.mean(widths) == pytest.approx(1.0, abs=0.1)


def test_cosmic_rays_are_flagged_with_at_least_90_percent_completeness(reduced):
    hits = flagged = 0
    for result, _, _, _, _, _, crs in reduced[0]:
        ys, xs = crs["y"], crs["x"]  # lcosim's overscan is on the right: raw x = trimmed x
        hits += len(crs)
        flagged += np.count_nonzero(result.dq[ys, xs] & DQ.COSMIC_RAY)
    assert hits > 50 and flagged / hits >= 0.9


def test_the_frame_edges_hold_finite_values_and_positive_errors(reduced):
    edge = np.ones((128, 128), dtype=bool)
    edge[8:-8, 8:-8] = False  # the outermost 8 rows and columns, where the filters run out of pixels
    for result, *_ in reduced[0]:
        assert np.isfinite(result.sci[edge]).all() and np.isfinite(result.err[edge]).all()
        assert (result.err[edge] > 0).all()
        sources, _ = extract_sources(result.sci, result.err, result.dq)
        assert np.isfinite(sources["flux"]).all() and np.isfinite(sources["x"]).all()


def test_saturated_stars_are_flagged(reduced):
    assert any(np.count_nonzero(result.dq & DQ.SATURATED) for result, *_ in reduced[0])


def test_bad_columns_are_flagged_low_response(reduced, lcosim_night):
    result = reduced[0][0][0]
    for column in lcosim_night.truth.bad_columns:
        assert np.all(result.dq[:, column] & DQ.LOW_RESPONSE)


def isolated_bright_stars(stars, x, y, exptime):
    flux = stars["rate_rp"] * exptime
    chosen = []
    for i in range(len(stars)):
        if not (10 < x[i] < 117 and 10 < y[i] < 117) or not (1.5e5 < flux[i] < 1e6):
            continue
        distance = np.hypot(x - x[i], y - y[i])
        neighbours = (distance > 0) & (distance < 15) & (flux > 0.003 * flux[i])
        if not neighbours.any():
            chosen.append(i)
    return chosen


def test_bright_unsaturated_stars_have_fluxes_within_2_percent_and_positions_within_0_1_px(reduced):
    checked = 0
    for result, _, stars, x, y, frame, _ in reduced[0]:
        catalog, _ = extract_sources(result.sci, result.err, result.dq)
        for i in isolated_bright_stars(stars, x, y, frame.exptime):
            distance = np.hypot(catalog["x"] - x[i], catalog["y"] - y[i])
            j = np.argmin(distance)
            if catalog["flag"][j] & SATURATED_SOURCE:
                continue
            truth_flux = stars["rate_rp"][i] * frame.exptime
            assert distance[j] < 0.1, f"star at ({x[i]:.1f}, {y[i]:.1f}) found {distance[j]:.3f} px away"
            # Bright: photon and sky noise in the aperture are < 0.5% of the flux.
            assert catalog["flux"][j] == pytest.approx(truth_flux, rel=0.02)
            checked += 1
    assert checked >= 4


def test_exptime_zero_is_not_reducible(registry, lcosim_night, reduced):
    bias, dark, flat = reduced[1]
    lco = registry["lcosim"]
    raw = fits.getdata(lcosim_night.frames[-1]).astype(np.float32)
    with pytest.raises(NotReducible, match="EXPTIME 0"):
        calibrate_science(
            raw,
            instrument=lco,
            geometry=lco.geometry(raw.shape, (1, 1)),
            exptime=0.0,
            bias=bias,
            dark=dark,
            flat=flat,
        )


def test_a_master_of_the_wrong_shape_is_not_reducible(registry, lcosim_night, reduced):
    bias, dark, flat = reduced[1]
    lco = registry["lcosim"]
    raw = fits.getdata(lcosim_night.frames[-1]).astype(np.float32)
    small = Master(flat.data[:64, :64], flat.error[:64, :64], flat.dq[:64, :64])
    with pytest.raises(NotReducible, match="master flat has shape"):
        calibrate_science(
            raw,
            instrument=lco,
            geometry=lco.geometry(raw.shape, (1, 1)),
            exptime=60.0,
            bias=bias,
            dark=dark,
            flat=small,
        )
