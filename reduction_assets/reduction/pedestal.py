"""Pedestal and dark rate of cameras without bias frames, from darks of several exposure times.

Such cameras (the ST-7 and most amateur CCDs) only take darks, each of which holds the bias pedestal
P plus the dark current R t. A master dark per exposure time calibrates frames of that time only; two
or more exposure times give, pixel by pixel, the straight line x(t) = P + R t by weighted least
squares (weights 1/ERR^2), so frames of any exposure time can be calibrated, and flats lose exactly
their pedestal and the dark current of their own (short) exposure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.masters import Master

# A pixel whose darks disagree with a straight line by more than this reduced chi^2 is counted as
# badly fitted (a non-linear or telegraphic pixel).
BAD_FIT_CHI2 = 9.0


@dataclass(frozen=True)
class PedestalFit:
    """The synthetic bias (e-), the dark-rate master (e-/s) and how well the lines fit."""

    bias: Master
    rate: Master
    statistics: dict[str, float]


def fit_pedestal_and_rate(darks: Sequence[Master], hot_sigma: float = 10.0) -> PedestalFit:
    """Fit x(t) = P + R t per pixel through bias-including master darks (``Master.exptime`` > 0, at
    least two distinct exposure times; ``data`` in e-, ``error`` their standard errors).

    Returns P with its error as a bias master, R with its error as a rate dark (hot pixels flagged as
    in other darks), and the fit's quality: the median reduced chi^2 and the fraction of pixels above
    :data:`BAD_FIT_CHI2` (when three or more exposure times leave degrees of freedom), the exposure
    times used and the median pedestal and rate.
    """
    times = np.array([dark.exptime for dark in darks], dtype=np.float64)
    if len(set(times.tolist())) < 2 or np.any(times <= 0):
        raise ValueError(f"a pedestal fit needs darks of two or more exposure times, got {sorted(times)}")
    shape = darks[0].data.shape
    if any(dark.data.shape != shape for dark in darks):
        raise ValueError("the darks of a pedestal fit must have one shape")
    x = np.stack([dark.data.astype(np.float64) for dark in darks])
    error = np.stack([dark.error.astype(np.float64) for dark in darks])
    usable = np.isfinite(x) & np.isfinite(error) & (error > 0)
    w = np.where(usable, 1.0 / np.where(usable, error, 1.0) ** 2, 0.0)
    x = np.where(usable, x, 0.0)
    t = times[:, None, None]
    s, st, stt = w.sum(0), (w * t).sum(0), (w * t * t).sum(0)
    sx, stx = (w * x).sum(0), (w * t * x).sum(0)
    determinant = s * stt - st * st
    solvable = determinant > 0
    safe = np.where(solvable, determinant, 1.0)
    rate = np.where(solvable, (s * stx - st * sx) / safe, np.nan)
    pedestal = np.where(solvable, (stt * sx - st * stx) / safe, np.nan)
    rate_error = np.where(solvable, np.sqrt(s / safe), np.nan)
    pedestal_error = np.where(solvable, np.sqrt(stt / safe), np.nan)

    residual = np.where(usable, x - pedestal - rate * t, 0.0)
    chi2 = (w * residual**2).sum(0)
    dof = usable.sum(0) - 2
    dq = np.zeros(shape, dtype=np.uint16)
    dq[~solvable] |= np.uint16(DQ.NO_DATA)
    for dark in darks:
        dq |= dark.dq & np.uint16(DQ.NO_DATA | DQ.LOW_COUNT)
    good = dq == 0
    centre = float(np.median(rate[good]))
    spread = float(np.median(np.abs(rate[good] - centre)) * 1.4826)
    hot = (rate > centre + hot_sigma * max(spread, 1e-6)) & good
    rate_dq = dq.copy()
    rate_dq[hot] |= np.uint16(DQ.HOT)
    statistics = {
        "exptimes_s": float(len(set(times.tolist()))),
        "shortest_s": float(times.min()),
        "longest_s": float(times.max()),
        "median_pedestal_e": float(np.median(pedestal[good])),
        "median": centre,
        "median_error": float(np.median(rate_error[good])),
        "hot_pixels": float(hot.sum()),
    }
    fitted = good & (dof > 0)
    if fitted.any():
        reduced = chi2[fitted] / dof[fitted]
        statistics["fit_chi2_median"] = float(np.median(reduced))
        statistics["fit_bad_fraction"] = float(np.mean(reduced > BAD_FIT_CHI2))
    return PedestalFit(
        bias=Master(pedestal.astype(np.float32), pedestal_error.astype(np.float32), dq, 0.0),
        rate=Master(rate.astype(np.float32), rate_error.astype(np.float32), rate_dq, 0.0),
        statistics=statistics,
    )
