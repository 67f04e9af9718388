"""Instrument-signature removal steps on arrays: overscan, trim, gain, bias, dark, flat.

Each step is a small pure function on arrays and plain values (units in the names and docstrings),
so the same steps serve master building (row blocks) and science frames (whole images).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.polynomial import legendre

from reduction_assets.kernels.select import median

Section = tuple[slice, slice]


def overscan_levels(
    raw: np.ndarray,
    overscan: Section,
    *,
    method: Literal["median", "poly"] = "median",
    order: int = 3,
) -> np.ndarray:
    """Bias level of each row from the overscan columns, in ADU.

    ``median``: the median of each row's overscan pixels (robust to cosmic rays, follows row-to-row
    structure). ``poly``: a Legendre polynomial of ``order`` fitted to those row medians (smooth,
    lower noise when the level drifts slowly). Returns one level per row of ``raw[overscan[0]]``.
    """
    region = np.asarray(raw[overscan], dtype=np.float64)
    if region.size == 0:
        raise ValueError("the overscan section is empty")
    # Non-finite overscan pixels (a damaged readout) are ignored; a row with none left takes the
    # median level of the other rows.
    region = np.where(np.isfinite(region), region, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = np.nanmedian(region, axis=1)
        if not np.isfinite(rows).any():
            raise ValueError("the overscan section has no finite pixel")
        rows = np.where(np.isfinite(rows), rows, np.nanmedian(rows))
    if method == "median":
        return rows
    if method == "poly":
        x = np.arange(rows.size, dtype=np.float64)
        fit = legendre.Legendre.fit(x, rows, deg=min(order, max(rows.size - 1, 0)))
        return fit(x)
    raise ValueError(f"unknown overscan method {method!r}")


def subtract_overscan(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Raw ADU minus one level per row (float32)."""
    return (np.asarray(raw, dtype=np.float32) - levels[:, None].astype(np.float32)).astype(np.float32)


def trim(image: np.ndarray, section: Section) -> np.ndarray:
    """The imaging area of a raw frame (a view)."""
    return image[section]


def check_gain(gain: float) -> float:
    """The gain (e-/ADU) if it is positive; ValueError otherwise."""
    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain}")
    return gain


def to_electrons(adu: np.ndarray, gain: float) -> np.ndarray:
    """ADU times gain (e-/ADU) gives electrons."""
    return (adu * np.float32(check_gain(gain))).astype(np.float32, copy=False)


def subtract_bias(image: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Image minus a master bias of the same shape (same unit, electrons)."""
    if image.shape != bias.shape:
        raise ValueError(f"bias shape {bias.shape} does not match image shape {image.shape}")
    return (image - bias).astype(np.float32, copy=False)


def subtract_dark(image: np.ndarray, dark_rate: np.ndarray, exptime: float) -> np.ndarray:
    """Image (e-) minus dark current: a rate master (e-/s) scaled by the exposure time (s)."""
    if image.shape != dark_rate.shape:
        raise ValueError(f"dark shape {dark_rate.shape} does not match image shape {image.shape}")
    if exptime < 0:
        raise ValueError(f"exposure time must not be negative, got {exptime}")
    return (image - dark_rate * np.float32(exptime)).astype(np.float32, copy=False)


def dark_for_exposure(
    master: np.ndarray,
    *,
    master_exptime: float,
    exptime: float,
    includes_bias: bool,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """The dark signal (e-) to remove from an exposure of ``exptime`` seconds.

    Rate masters (``includes_bias=False``, e-/s) scale linearly with exposure time. Masters of
    cameras without bias frames (like the ST-7) include the bias: they apply as they are to
    exposures of their own time; scaling one needs the bias level, given as ``bias`` (e-).
    """
    if not includes_bias:
        return (master * np.float32(exptime)).astype(np.float32, copy=False)
    if exptime == master_exptime:
        return master
    if bias is None:
        raise ValueError(
            f"a bias-including dark of {master_exptime:g} s cannot be scaled to {exptime:g} s without "
            "a bias level"
        )
    if master_exptime <= 0:
        raise ValueError("a bias-including dark with exposure time 0 cannot be scaled")
    return (bias + (master - bias) * np.float32(exptime / master_exptime)).astype(np.float32)


def illuminated_level(image: np.ndarray, *, threshold: float = 0.1) -> float:
    """Robust level of the illuminated area: the median of pixels above ``threshold`` x the median.

    Vignetted corners and unilluminated edges would drag a plain median down; NaNs are ignored.
    Returns NaN if nothing is illuminated.
    """
    image = np.asarray(image)
    finite = np.isfinite(image)
    if not finite.any():
        return float("nan")
    first = median(image, finite)
    if not first > 0:
        return first
    return median(image, finite & (image > threshold * first))


def normalise_flat(image: np.ndarray, level: float) -> np.ndarray:
    """A flat divided by its illuminated level (dimensionless, ~1)."""
    if not (np.isfinite(level) and level > 0):
        raise ValueError(f"flat level must be positive, got {level}")
    return (image / np.float32(level)).astype(np.float32, copy=False)
