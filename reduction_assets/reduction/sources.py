"""Source extraction and photometry with sep (Source Extractor as a library)."""

from __future__ import annotations

import numpy as np
import sep

from reduction_assets.reduction.cosmics import fill_masked
from reduction_assets.reduction.dq import DQ

SOURCE_COLUMNS = ("x", "y", "flux", "flux_err", "fwhm", "peak", "flag", "ra", "dec")
SATURATED_SOURCE = 1 << 8  # flag bit added to sep's own flags: a saturated pixel near the centre
COSMIC_RAY_FILLED = 1 << 9  # flag bit: cosmic-ray pixels in the aperture were filled from neighbours


def sky_background(image: np.ndarray, mask: np.ndarray, box: int = 64) -> tuple[np.ndarray, float, float]:
    """sep's background map of ``image`` (``mask`` pixels ignored), with its global level and rms
    (same unit as the image); the box shrinks for small images."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    box = int(max(16, min(box, min(image.shape) // 2)))
    background = sep.Background(image, mask=np.ascontiguousarray(mask), bw=box, bh=box)
    return background.back(), float(background.globalback), float(background.globalrms)


def estimate_fwhm(
    signal: np.ndarray, err: np.ndarray, mask: np.ndarray, *, threshold: float = 20.0
) -> float | None:
    """Median FWHM (pixels) of the well-detected, unflagged sources of a background-subtracted image,
    or None when fewer than three qualify."""
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    mask = np.ascontiguousarray(mask)
    objects = sep.extract(
        signal, threshold, err=np.ascontiguousarray(err, dtype=np.float64), mask=mask, minarea=5
    )
    objects = objects[objects["flag"] == 0]
    if len(objects) < 3:
        return None
    radius, flag = sep.flux_radius(
        signal, objects["x"], objects["y"], 6.0 * objects["a"], 0.5, mask=mask, normflux=None, subpix=5
    )
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
    sci = np.ascontiguousarray(sci, dtype=np.float64)
    err = np.ascontiguousarray(err, dtype=np.float64)
    mask = (dq & (DQ.NO_DATA | DQ.COSMIC_RAY | DQ.BAD_PIXEL)) != 0
    back, globalback, globalrms = sky_background(sci, mask, background_box)
    subtracted = sci - back
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
    radius_half, _ = sep.flux_radius(
        subtracted, x, y, 6.0 * objects["a"], 0.5, mask=mask, normflux=None, subpix=5
    )
    fwhm = 2.0 * radius_half
    good_fwhm = np.isfinite(fwhm) & (fwhm > 0)
    fwhm_median = float(np.median(fwhm[good_fwhm])) if good_fwhm.any() else 3.0
    sigma = max(fwhm_median, 1.0) / 2.3548
    wx, wy, wflag = sep.winpos(subtracted, x, y, sigma, mask=mask)
    # Cosmic-ray pixels in an aperture are filled from their neighbours rather than masked: sep would
    # rescale the sum by the unmasked area, which is wrong wherever a star is not flat.
    hits = (dq & DQ.COSMIC_RAY) != 0
    usable = (dq & (DQ.NO_DATA | DQ.BAD_PIXEL)) == 0
    radius = aperture_fwhm * fwhm_median
    flux, flux_err, flux_flag = sep.sum_circle(
        fill_masked(subtracted, hits, usable),
        wx,
        wy,
        radius,
        err=fill_masked(err, hits, usable),
        mask=np.ascontiguousarray(~usable),
        subpix=5,
    )
    filled, _, _ = sep.sum_circle(hits.astype(np.float64), wx, wy, radius, subpix=1)
    table = np.zeros(len(objects), dtype=empty.dtype)
    table["x"], table["y"] = wx, wy
    table["flux"], table["flux_err"] = flux, flux_err
    table["fwhm"] = fwhm
    table["peak"] = objects["peak"]
    saturated = np.array(
        [
            (
                (
                    dq[
                        max(int(round(b)) - 2, 0) : int(round(b)) + 3,
                        max(int(round(a)) - 2, 0) : int(round(a)) + 3,
                    ]
                    & DQ.SATURATED
                )
                != 0
            ).any()
            for a, b in zip(wx, wy)
        ],
        dtype=bool,
    )
    table["flag"] = (
        objects["flag"]
        | wflag
        | flux_flag
        | np.where(saturated, SATURATED_SOURCE, 0)
        | np.where(filled > 0, COSMIC_RAY_FILLED, 0)
    )
    table["ra"] = np.nan
    table["dec"] = np.nan
    statistics.update(n_sources=float(len(objects)), fwhm_median=fwhm_median)
    return table, statistics
