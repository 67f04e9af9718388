"""Co-adding resampled frames: a clipped, weighted mean with propagated variance, per pixel.

Definitions, per pixel, over the N members' values ``x_k`` (already on the output grid) with
variances ``v_k`` and flags ``d_k``::

    usable     = d_k has none of ``reject_bits``, x_k and v_k finite
    matched    x'_k = scales[k] * x_k + offsets[k]       v'_k = scales[k]^2 * v_k
    clipping   (three or more usable values; two cannot tell which one is wrong)
               c = median of the survivors (the lower middle one for an even count: artefacts are
                   positive, two of four must not pull the centre between them)
               reject |x'_k - c| > kappa * sqrt(v'_k) + amplitude_fraction * |c - background|
               until nothing changes or ``max_iters`` passes (SWarp's CLIPPED combine, whose
               CLIP_AMPFRAC keeps the cores of stars seen in different seeing; SWarp's images are
               background-subtracted, ours keep the matched sky level ``background``)
    sci        = sum w_k x'_k / sum w_k                      over the survivors, w = ``weights``
    variance   = sum w_k^2 v'_k / (sum w_k)^2
    exposure   = sum exptimes[k]                             (seconds)
    count      = the number of survivors

A pixel with no survivor has sci 0, variance 0, exposure 0, count 0 (the caller marks it no data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np


@dataclass(frozen=True)
class Coadd:
    """A co-added block: ``sci``, ``variance`` (float32), ``exposure`` (float32, seconds), ``count``
    (int16: members used) and ``rejected`` (int16: usable values clipped)."""

    sci: np.ndarray
    variance: np.ndarray
    exposure: np.ndarray
    count: np.ndarray
    rejected: np.ndarray


def coadd(
    sci: np.ndarray,
    variance: np.ndarray,
    dq: np.ndarray,
    *,
    weights: np.ndarray,
    scales: np.ndarray,
    offsets: np.ndarray,
    exptimes: np.ndarray,
    reject_bits: int,
    kappa: float = 4.0,
    amplitude_fraction: float = 0.3,
    max_iters: int = 3,
    background: float = 0.0,
) -> Coadd:
    """Co-add (N, H, W) members (see the module docstring). Per-member arrays have shape (N,).
    ``sci``, ``variance`` and ``dq`` may be views (rows of larger, disk-backed planes)."""
    sci, variance, dq = np.asarray(sci), np.asarray(variance), np.asarray(dq)
    if sci.ndim != 3:
        raise ValueError(f"sci must be (N, H, W); got {sci.shape}")
    n = sci.shape[0]
    if variance.shape != sci.shape or dq.shape != sci.shape:
        raise ValueError("sci, variance and dq must have the same shape")
    per_member = {}
    for name, values in (
        ("weights", weights),
        ("scales", scales),
        ("offsets", offsets),
        ("exptimes", exptimes),
    ):
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (n,) or not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be {n} finite values")
        per_member[name] = array
    if np.any(per_member["weights"] <= 0) or np.any(per_member["scales"] <= 0):
        raise ValueError("weights and scales must be positive")
    if not (kappa > 0 and amplitude_fraction >= 0 and max_iters >= 1):
        raise ValueError("kappa > 0, amplitude_fraction >= 0 and max_iters >= 1 are required")
    height, width = sci.shape[1:]
    out = Coadd(
        sci=np.empty((height, width), np.float32),
        variance=np.empty((height, width), np.float32),
        exposure=np.empty((height, width), np.float32),
        count=np.empty((height, width), np.int16),
        rejected=np.empty((height, width), np.int16),
    )
    _coadd_kernel(
        _native(sci, np.float32),
        _native(variance, np.float32),
        _native(dq, np.uint16),
        per_member["weights"],
        per_member["scales"],
        per_member["offsets"],
        per_member["exptimes"],
        int(reject_bits),
        float(kappa),
        float(amplitude_fraction),
        int(max_iters),
        float(background),
        out.sci,
        out.variance,
        out.exposure,
        out.count,
        out.rejected,
    )
    return out


def _native(array: np.ndarray, dtype) -> np.ndarray:
    """The array as is when it already has the dtype (views of disk-backed planes are not copied)."""
    array = np.asarray(array)
    return array if array.dtype == dtype else array.astype(dtype)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def _coadd_kernel(
    sci,
    variance,
    dq,
    weights,
    scales,
    offsets,
    exptimes,
    reject_bits,
    kappa,
    amplitude_fraction,
    max_iters,
    background,
    out_sci,
    out_var,
    out_exposure,
    out_count,
    out_rejected,
):
    n, height, width = sci.shape
    for r in nb.prange(height):
        values = np.empty(n)
        sigmas = np.empty(n)
        members = np.empty(n, np.int64)
        keep = np.empty(n, np.bool_)
        ordered = np.empty(n)
        for c in range(width):
            m = 0
            for k in range(n):
                if dq[k, r, c] & reject_bits:
                    continue
                x = sci[k, r, c]
                v = variance[k, r, c]
                if not (np.isfinite(x) and np.isfinite(v)):
                    continue
                values[m] = scales[k] * x + offsets[k]
                sigmas[m] = scales[k] * np.sqrt(max(v, 0.0))
                members[m] = k
                keep[m] = True
                m += 1
            survivors = m
            if m >= 3:
                for _ in range(max_iters):
                    # the (lower) median of the survivors, by insertion sort of a few values
                    q = 0
                    for i in range(m):
                        if keep[i]:
                            x = values[i]
                            j = q
                            while j > 0 and ordered[j - 1] > x:
                                ordered[j] = ordered[j - 1]
                                j -= 1
                            ordered[j] = x
                            q += 1
                    centre = ordered[(q - 1) // 2]
                    changed = False
                    survivors = 0
                    for i in range(m):
                        bound = kappa * sigmas[i] + amplitude_fraction * abs(centre - background)
                        inside = abs(values[i] - centre) <= bound
                        if inside != keep[i]:
                            changed = True
                            keep[i] = inside
                        if inside:
                            survivors += 1
                    if survivors < 3 or not changed:
                        break
                if survivors == 0:  # everything disagrees: keep all rather than nothing
                    for i in range(m):
                        keep[i] = True
                    survivors = m
            total_w = 0.0
            total = 0.0
            total_var = 0.0
            exposure = 0.0
            for i in range(m):
                if not keep[i]:
                    continue
                k = members[i]
                w = weights[k]
                total_w += w
                total += w * values[i]
                total_var += w * w * sigmas[i] * sigmas[i]
                exposure += exptimes[k]
            if survivors == 0:
                out_sci[r, c] = 0.0
                out_var[r, c] = 0.0
                out_exposure[r, c] = 0.0
            else:
                out_sci[r, c] = total / total_w
                out_var[r, c] = total_var / (total_w * total_w)
                out_exposure[r, c] = exposure
            out_count[r, c] = survivors
            out_rejected[r, c] = m - survivors
