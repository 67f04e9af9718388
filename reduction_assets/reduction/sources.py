"""Source extraction and photometry with sep (Source Extractor as a library)."""

from __future__ import annotations

import numpy as np
import sep

from reduction_assets.reduction.dq import DQ

SOURCE_COLUMNS = ("x", "y", "flux", "flux_err", "fwhm", "peak", "flag", "ra", "dec")
SATURATED_SOURCE = 1 << 8  # flag bit added to sep's own flags: a saturated pixel near the centre


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
    box = int(max(16, min(background_box, min(sci.shape) // 2)))
    background = sep.Background(sci, mask=mask, bw=box, bh=box)
    subtracted = sci - background.back()
    objects = sep.extract(
        subtracted, threshold, err=err, mask=mask, minarea=min_area, deblend_cont=0.005, clean=True
    )
    empty = np.zeros(
        0,
        dtype=[(name, "f8") for name in SOURCE_COLUMNS[:-3]] + [("flag", "i4"), ("ra", "f8"), ("dec", "f8")],
    )
    statistics = {
        "sky_e": float(background.globalback),
        "sky_rms_e": float(background.globalrms),
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
    flux, flux_err, flux_flag = sep.sum_circle(
        subtracted, wx, wy, aperture_fwhm * fwhm_median, err=err, mask=mask, subpix=5
    )
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
    table["flag"] = objects["flag"] | wflag | flux_flag | np.where(saturated, SATURATED_SOURCE, 0)
    table["ra"] = np.nan
    table["dec"] = np.nan
    statistics.update(n_sources=float(len(objects)), fwhm_median=fwhm_median)
    return table, statistics
