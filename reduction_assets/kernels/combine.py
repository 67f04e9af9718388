"""Combining a stack of frames along the frame axis: mean, median and sigma-clipped mean.

Definitions (per pixel, over the values ``x_k`` of the N frames at that pixel):

* Values that are NaN or ±inf, or whose ``mask`` is True, never enter any statistic.
* ``scales`` multiply each frame before anything else (``x_k * scales[k]``, in the stack's dtype).
* ``median``: the middle value of the n valid values; for even n the mean of the two middle ones.
* ``mean``: the mean of the valid values, weighted by ``weights[k]`` when given.
* ``sigma_clip``: iterate on the surviving values (at first all valid ones)::

      c = median (center='median') or mean (center='mean') of the survivors
      s = population standard deviation, ddof=0 (scale='std'), or
          mad_factor * median(|x - median|) (scale='mad'; mad_factor = 1.482602218505602 by default)
      survivors = those with  c - sigma_low * s <= x <= c + sigma_high * s

  until an iteration rejects nothing, the survivors would be empty, or ``max_iters`` iterations have
  run (``max_iters=None``: until convergence; ``1``: a single pass). The result is the (weighted)
  mean of all valid values within the *last* bounds. This is exactly astropy's
  ``sigma_clip(axis=0, sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc)`` (its C fast path,
  including re-admission of earlier rejects that lie inside the final bounds) followed by the mean;
  with ``max_iters=1, scale='mad', mad_factor=1.4826`` it is BANZAI's ``sigma_clipped_mean``
  (reject |x - median| > 3 * 1.4826 * MAD, mean of the rest). With ``scale='model'`` the scale is not
  measured but known: s = sqrt(floor + gain * max(c - offset, 0)) from a :class:`NoiseModel`, and
  clipping stops when fewer than three values survive (two cannot tell which is the outlier), keeping
  the bounds of the last iteration (no bounds at all for a pixel with fewer than three values); the
  median centre of an even number of values is then the lower middle one (hits are positive: two
  among four frames must not pull the centre between them).
* Equal values (zero scatter) give s = 0 and reject nothing that equals the centre.

Outputs: ``data`` (the combined image), ``n_used`` (values that entered the result) and ``error``,
the standard error of the result: ``std_ddof1 / sqrt(n)`` for means (the weighted form
``sqrt(var_w * sum(w^2)) / sum(w)`` with weights), ``sqrt(pi/2) * std_ddof1 / sqrt(n)`` for the median.
Where no value is used (all masked, invalid or rejected) ``data`` and ``error`` are NaN and
``n_used`` is 0; where one value is used ``error`` is NaN (no scatter can be measured).

Arithmetic on sorted values happens in float64; ``data`` and ``error`` have the stack's float dtype
(integer stacks are combined as float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from reduction_assets.kernels import _combine_kernel as _k
from reduction_assets.kernels.float_keys import key_form
from reduction_assets.kernels.network import batcher_network, selection_network

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): astropy's mad_std
BANZAI_MAD_TO_SIGMA = 1.4826

_METHODS = {"mean": _k.MEAN, "median": _k.MEDIAN, "sigma_clip": _k.SIGMA_CLIP}
_SCALES = {"std": _k.SCALE_STD, "mad": _k.SCALE_MAD, "model": _k.SCALE_MODEL}


@dataclass(frozen=True)
class NoiseModel:
    """The standard deviation of one value at level ``c`` (in the stack's unit)::

        sigma(c)^2 = floor + gain * max(c - offset, 0)

    ``floor`` is the read noise squared (plus what every value shares, e.g. the overscan level's
    error), ``gain`` turns levels above ``offset`` into Poisson variance: 1 for electrons, 1/t for
    rates in e-/s over t seconds, 1/L for flats scaled by 1/L; ``offset`` is the noiseless pedestal of
    darks that include the bias (0 otherwise).
    """

    floor: float
    gain: float = 0.0
    offset: float = 0.0

    def __post_init__(self):
        if not (self.floor > 0 and self.gain >= 0 and np.isfinite(self.offset)):
            raise ValueError(f"a noise model needs floor > 0 and gain >= 0; got {self}")

    def as_tuple(self) -> tuple[float, float, float]:
        return float(self.floor), float(self.gain), float(self.offset)

    def sigma(self, level: np.ndarray) -> np.ndarray:
        """The standard deviation of one value at ``level`` (array)."""
        return np.sqrt(self.floor + self.gain * np.clip(np.asarray(level, np.float64) - self.offset, 0, None))


@dataclass(frozen=True)
class CombineResult:
    """The combined image, the number of values used per pixel, and the standard error image."""

    data: np.ndarray
    n_used: np.ndarray
    error: np.ndarray


def _as_float_stack(stack: np.ndarray) -> np.ndarray:
    """The stack as contiguous native floats: float32 and float64 keep their width whatever their
    byte order (FITS data are big-endian), float16 and integers become float32."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"stack must be (N, H, W); got shape {stack.shape}")
    if stack.shape[0] < 1:
        raise ValueError("stack has no frames")
    if stack.dtype.kind == "f" and stack.dtype.itemsize in (4, 8):
        return np.ascontiguousarray(stack, dtype=stack.dtype.newbyteorder("="))
    if stack.dtype.kind in "iubf":
        return np.ascontiguousarray(stack, dtype=np.float32)
    raise ValueError(f"stack dtype {stack.dtype} is not numeric")


def _per_frame(values, n: int, name: str, positive: bool) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must have one value per frame, shape ({n},); got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    if positive and np.any(array <= 0):
        raise ValueError(f"{name} must be positive")
    return array


def combine(
    stack: np.ndarray,
    method: Literal["mean", "median", "sigma_clip"],
    *,
    center: Literal["median", "mean"] = "median",
    scale: Literal["std", "mad", "model"] = "std",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    max_iters: int | None = None,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    scales: np.ndarray | None = None,
    mad_factor: float = MAD_TO_SIGMA,
    noise: NoiseModel | None = None,
) -> CombineResult:
    """Combine a stack of frames along axis 0. See the module docstring for the exact definitions.

    Parameters
    ----------
    stack
        (N, H, W) values (any unit: ADU, electrons, e/s); float32 or float64 of either byte order
        (integers and float16 become float32). A ``numpy.ma.MaskedArray``'s mask is honoured.
    method
        ``'mean'``, ``'median'`` or ``'sigma_clip'`` (sigma-clipped mean).
    center, scale
        Centre (``'median'`` or ``'mean'``) and scale of the clipping: ``'std'``, ``'mad'``, or
        ``'model'``: the known noise of the values at the centre's level, from ``noise`` (efficient on
        clean data, where a scatter measured from a few values is itself noisy).
    sigma_low, sigma_high
        Rejection thresholds below and above the centre, in units of the scale.
    max_iters
        Clipping iterations: ``None`` until nothing changes, ``1`` a single pass.
    mask
        (N, H, W) booleans; True values never enter.
    weights
        (N,) positive per-frame weights of the means (not of the clipping statistics).
    scales
        (N,) per-frame multiplicative scales applied before everything else.
    mad_factor
        Factor turning the MAD into a standard deviation (astropy's by default; BANZAI uses 1.4826).
    noise
        The :class:`NoiseModel` of ``scale='model'``.

    Returns
    -------
    CombineResult
        ``data`` (H, W), ``n_used`` (H, W) int32, ``error`` (H, W).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}; got {method!r}")
    if center not in ("median", "mean"):
        raise ValueError(f"center must be 'median' or 'mean'; got {center!r}")
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {sorted(_SCALES)}; got {scale!r}")
    if (scale == "model") != (noise is not None):
        raise ValueError("scale='model' needs a noise model, and only it takes one")
    if not (sigma_low > 0 and sigma_high > 0):
        raise ValueError("sigma_low and sigma_high must be positive")
    if max_iters is not None and (int(max_iters) != max_iters or max_iters < 1):
        raise ValueError("max_iters must be None or a whole number >= 1")
    if isinstance(stack, np.ma.MaskedArray):
        # A masked array's mask is honoured like ``mask`` (both, if both are given).
        own = np.ma.getmaskarray(stack)
        mask = own if mask is None else (np.asarray(mask, dtype=bool) | own)
        stack = stack.data
    stack = _as_float_stack(stack)
    n, height, width = stack.shape
    weights_array = _per_frame(weights, n, "weights", positive=True)
    scales_array = _per_frame(scales, n, "scales", positive=False)
    if scales_array is not None:
        # The products in float64 rounded to the stack's type, as (stack * scales).astype(...) gives,
        # without a float64 copy of the whole stack (its page faults cost most of a master's time).
        stack = np.multiply(stack, scales_array[:, None, None], out=np.empty_like(stack), casting="unsafe")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != stack.shape:
            raise ValueError(f"mask shape {mask.shape} differs from stack shape {stack.shape}")
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
    net_i, net_j = batcher_network(n)
    med_i, med_j, med_kind = selection_network(n, tuple(sorted({(n - 1) // 2, n // 2})))
    # The network sorts the floats' bit patterns as integers of the same width (see the kernel).
    form = key_form(stack.dtype)
    # Outputs are allocated by numpy (huge pages for large images), not inside the kernel.
    out = np.empty((height, width), dtype=stack.dtype)
    n_used = np.empty((height, width), dtype=np.int32)
    error = np.empty((height, width), dtype=stack.dtype)
    _k.combine_kernel(
        stack,
        mask if mask is not None else np.zeros((1, 1, 1), dtype=np.bool_),
        mask is not None,
        weights_array if weights_array is not None else np.ones(n),
        weights_array is not None,
        _METHODS[method],
        center == "median",
        _SCALES[scale],
        float(mad_factor),
        np.array(noise.as_tuple() if noise is not None else (0.0, 0.0, 0.0), dtype=np.float64),
        float(sigma_low),
        float(sigma_high),
        0 if max_iters is None else int(max_iters),
        net_i,
        net_j,
        med_i,
        med_j,
        med_kind,
        stack.view(form.dtype),
        form,
        out,
        n_used,
        error,
    )
    return CombineResult(data=out, n_used=n_used, error=error)
