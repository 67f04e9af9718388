"""Source extraction and photometry with sep (Source Extractor as a library)."""

from __future__ import annotations

import numpy as np
import sep

from reduction_assets.kernels.apertures import any_in_circles, flux_radius, sum_circle, windowed_positions
from reduction_assets.kernels.bits import any_set
from reduction_assets.kernels.peaks import any_flagged_near, isolated_peaks, still_isolated
from reduction_assets.reduction.cosmics import fill_masked
from reduction_assets.reduction.dq import DQ

SOURCE_COLUMNS = ("x", "y", "flux", "flux_err", "fwhm", "peak", "flag", "ra", "dec")
SATURATED_SOURCE = 1 << 8  # flag bit added to sep's own flags: a saturated pixel near the centre
COSMIC_RAY_FILLED = 1 << 9  # flag bit: cosmic-ray pixels in the aperture were filled from neighbours
# Windowed centroids with the exact overlap of pixels and window (0) instead of Source Extractor's
# 11 x 11 sampling: more accurate (by up to 0.002 px) and 2.5 times faster.
WINDOW_SUBPIX = 0


def subtract_sky(image: np.ndarray, mask: np.ndarray, box: int = 64) -> tuple[np.ndarray, float, float]:
    """``image`` minus sep's background map (``mask`` pixels ignored; float64, the same unit), with
    the map's global level and rms; the box shrinks for small images."""
    image = np.ascontiguousarray(image)
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float64)
    box = int(max(16, min(box, min(image.shape) // 2)))
    background = sep.Background(image, mask=np.ascontiguousarray(mask), bw=box, bh=box)
    # In place on a float64 copy: the values of image - background.back() without another image.
    subtracted = image.astype(np.float64)
    background.subfrom(subtracted)
    return subtracted, float(background.globalback), float(background.globalrms)


def estimate_fwhm(
    signal: np.ndarray,
    err: np.ndarray,
    mask: np.ndarray,
    *,
    threshold: float = 20.0,
    max_stars: int = 1000,
) -> float | None:
    """Median FWHM (pixels) of the bright isolated stars of a background-subtracted image, or None
    when fewer than three qualify.

    Stars are the peaks above ``threshold`` x ``err`` that are the highest pixel of the box their
    aperture fits in, with no ``mask`` pixel there (at most ``max_stars``, spread over the range of
    brightness). A star's FWHM is twice sep's half-light radius about its windowed centroid within
    2.55 FWHM (6 sigma of a Gaussian); a first pass in 10 pixels about the peaks gives that radius
    (and is the answer when too few stars are isolated in the larger boxes of bad seeing).
    """
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    mask = np.ascontiguousarray(mask)
    ys, xs = isolated_peaks(signal, err, mask, threshold, 5)
    first = _spread(signal, ys, xs, max_stars)
    if first is None:
        return None
    rough = _median_fwhm(signal, mask, *first, 10.0)
    if rough is None:
        return None
    rmax = max(5.0, 2.55 * rough)
    wide = still_isolated(signal, mask, ys, xs, int(np.ceil(rmax)))
    stars = _spread(signal, ys[wide], xs[wide], max_stars)
    if stars is None:
        return rough
    x, y, flag = windowed_positions(signal, *stars, rough / 2.3548, mask=mask, subpix=WINDOW_SUBPIX)
    near = (flag == 0) & np.isfinite(x) & np.isfinite(y) & (np.hypot(x - stars[0], y - stars[1]) < 1.5)
    fine = _median_fwhm(signal, mask, x[near], y[near], rmax)
    return rough if fine is None else fine


def _spread(signal: np.ndarray, ys: np.ndarray, xs: np.ndarray, max_stars: int):
    """Columns and rows (float) of peaks, at most ``max_stars`` across the brightness range; None
    below three."""
    if ys.size < 3:
        return None
    if ys.size > max_stars:
        order = np.argsort(signal[ys, xs], kind="stable")
        keep = np.sort(order[np.linspace(0, ys.size - 1, max_stars).round().astype(int)])
        ys, xs = ys[keep], xs[keep]
    return xs.astype(np.float64), ys.astype(np.float64)


def _median_fwhm(signal: np.ndarray, mask: np.ndarray, x: np.ndarray, y: np.ndarray, rmax: float):
    """Median of twice the half-light radii within ``rmax`` pixels of (x, y); None below three."""
    if x.size < 3:
        return None
    radius, flag = flux_radius(signal, x, y, np.full(x.size, rmax), 0.5, mask=mask)
    fwhm = 2.0 * radius[(flag == 0) & np.isfinite(radius) & (radius > 0)]
    return float(np.median(fwhm)) if fwhm.size >= 3 else None


def no_sources() -> np.ndarray:
    """An empty source catalogue, with the columns of :func:`extract_sources`."""
    return np.zeros(
        0,
        dtype=[(name, "f8") for name in SOURCE_COLUMNS[:-3]] + [("flag", "i4"), ("ra", "f8"), ("dec", "f8")],
    )


def extract_sources(
    sci: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    *,
    threshold: float = 5.0,
    min_area: int = 5,
    background_box: int = 64,
    aperture_fwhm: float = 3.0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Sources above ``threshold`` x ERR: windowed positions (0-based pixels), aperture fluxes (e-)
    with errors in a radius of ``aperture_fwhm`` x the median FWHM, FWHM (pixels) and sep flags.

    Cosmic-ray and no-data pixels are masked; saturated pixels are kept (a saturated star is still a
    source) and flagged. Returns a structured array and summary statistics (sky, count, FWHM).
    """
    # ERR holds float32 values: sep gets the same ones from the plane as from a float64 copy.
    err = np.ascontiguousarray(err)
    # Masked for detection; cosmic-ray hits; no usable value (left out of the aperture sums); saturated.
    mask, hits, unusable, saturated_pixels = any_set(
        dq, DQ.NO_DATA | DQ.COSMIC_RAY | DQ.BAD_PIXEL, DQ.COSMIC_RAY, DQ.NO_DATA | DQ.BAD_PIXEL, DQ.SATURATED
    )
    subtracted, globalback, globalrms = subtract_sky(sci, mask, background_box)
    objects = sep.extract(
        subtracted, threshold, err=err, mask=mask, minarea=min_area, deblend_cont=0.005, clean=True
    )
    empty = no_sources()
    statistics = {
        "sky_e": globalback,
        "sky_rms_e": globalrms,
        "n_sources": 0.0,
        "fwhm_median": float("nan"),
    }
    if len(objects) == 0:
        return empty, statistics
    x, y = objects["x"], objects["y"]
    radius_half, _ = flux_radius(subtracted, x, y, 6.0 * objects["a"], 0.5, mask=mask)
    fwhm = 2.0 * radius_half
    good_fwhm = np.isfinite(fwhm) & (fwhm > 0)
    fwhm_median = float(np.median(fwhm[good_fwhm])) if good_fwhm.any() else 3.0
    sigma = max(fwhm_median, 1.0) / 2.3548
    wx, wy, wflag = windowed_positions(subtracted, x, y, sigma, mask=mask, subpix=WINDOW_SUBPIX)
    # Cosmic-ray pixels in an aperture are filled from their neighbours rather than masked: sep would
    # rescale the sum by the unmasked area, which is wrong wherever a star is not flat.
    radius = aperture_fwhm * fwhm_median
    usable = ~unusable
    err_filled = fill_masked(err, hits, usable)
    # The sky-subtracted copy is this function's own and not read again: filled in place.
    signal_filled = fill_masked(subtracted, hits, usable, overwrite_input=True)
    flux, flux_err, flux_flag = sum_circle(
        signal_filled, wx, wy, radius, err=err_filled, mask=unusable, subpix=5
    )
    hit_in_aperture = any_in_circles(hits, wx, wy, radius)
    table = np.zeros(len(objects), dtype=empty.dtype)
    table["x"], table["y"] = wx, wy
    table["flux"], table["flux_err"] = flux, flux_err
    table["fwhm"] = fwhm
    table["peak"] = objects["peak"]
    saturated = any_flagged_near(saturated_pixels, wx, wy, 2)
    table["flag"] = (
        objects["flag"]
        | wflag
        | flux_flag
        | np.where(saturated, SATURATED_SOURCE, 0)
        | np.where(hit_in_aperture, COSMIC_RAY_FILLED, 0)
    )
    table["ra"] = np.nan
    table["dec"] = np.nan
    statistics.update(n_sources=float(len(objects)), fwhm_median=fwhm_median)
    return table, statistics
