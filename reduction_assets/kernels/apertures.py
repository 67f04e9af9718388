"""Circular apertures (numba): the radius enclosing a fraction of the light, Source Extractor's
FLUX_RADIUS as sep computes it, for many sources at once on numba threads.

sep (``sep.flux_radius``) sums the light in 64 annuli out to ``rmax``, sampling every pixel on a
``subpix`` x ``subpix`` grid (with 64 annuli over a few pixels every pixel straddles a boundary),
and inverts the cumulative sum by linear interpolation. This is the same arithmetic in the same
order (pixel values rounded to float32 as sep reads them, sums in float64), so the radii are sep's
to the last bit; it is faster because the loops are compiled for the array's types and the sources
are shared among threads (sep holds the GIL and measures one source at a time).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ANNULI = 64  # sep's FLUX_RADIUS_BUFSIZE
APERTURE_TRUNCATED = 0x0010  # sep's SEP_APER_TRUNC: the aperture runs off the image
APERTURE_HAS_MASKED = 0x0020  # sep's SEP_APER_HASMASKED: a masked pixel within rmax + 1.5 px


@njit(cache=True, inline="always")
def _box(x, y, reach, width, height):
    """sep's box of the pixels within ``reach`` of (x, y), clipped to the image, and whether it
    was clipped (sep's boxextent; C casts truncate toward zero, as int() does)."""
    xmin = int(x - reach + 0.5)
    xmax = int(x + reach + 1.4999999)
    ymin = int(y - reach + 0.5)
    ymax = int(y + reach + 1.4999999)
    truncated = xmin < 0 or xmax > width or ymin < 0 or ymax > height
    return max(xmin, 0), min(xmax, width), max(ymin, 0), min(ymax, height), truncated


@njit(cache=True)
def _annuli(data, mask, x, y, rmax, subpix, total, area, masked_area):
    """Light (data units) and area (pixels) in ANNULI rings out to ``rmax`` about (x, y); the sep
    flags. Masked pixels' area is counted apart and the ring's light scaled up by the unmasked
    fraction, as sep does."""
    height, width = data.shape
    flag = 0
    scale = 1.0 / subpix
    scale2 = scale * scale
    offset = 0.5 * (scale - 1.0)
    r_out = rmax + 1.5  # sep's margin for interpolation
    r_out2 = r_out * r_out
    step = rmax / ANNULI
    step_density = 1.0 / step
    near_previous = 0.7072
    near_next = step - 0.7072
    xmin, xmax, ymin, ymax, truncated = _box(x, y, r_out, width, height)
    if truncated:
        flag |= APERTURE_TRUNCATED
    xs2 = np.empty(subpix)
    d2 = np.empty(subpix * subpix)
    rings = np.empty(subpix * subpix, dtype=np.int64)
    # Sub-pixels lie within half a pixel's diagonal (0.71) of their pixel's centre: no sub-pixel of
    # a pixel further than this from (x, y) reaches an annulus (but a masked one still flags).
    beyond = rmax + 0.75
    for iy in range(ymin, ymax):
        for ix in range(xmin, xmax):
            dx = ix - x
            dy = iy - y
            rpix2 = dx * dx + dy * dy
            if not rpix2 < r_out2:
                continue
            pixel = np.float64(np.float32(data[iy, ix]))
            is_masked = mask[iy, ix]
            if is_masked:
                flag |= APERTURE_HAS_MASKED
            rpix = math.sqrt(rpix2)
            if rpix > beyond:
                continue
            d = np.fmod(rpix, step)
            if d < near_previous or d > near_next:
                # The sub-pixel offsets step by repeated addition, as sep's do (the same rounding);
                # the rings of all the sub-pixels are found first, a loop the compiler vectorises,
                # then their light is added in sep's order.
                dx1 = dx + offset
                for sx in range(subpix):
                    xs2[sx] = dx1 * dx1
                    dx1 += scale
                dy += offset
                n = 0
                for _ in range(subpix):
                    dy2 = dy * dy
                    for sx in range(subpix):
                        d2[n + sx] = xs2[sx] + dy2
                    n += subpix
                    dy += scale
                for k in range(n):
                    rings[k] = int(math.sqrt(d2[k]) * step_density)
                if is_masked:
                    for k in range(n):
                        j = rings[k]
                        if j < ANNULI:
                            masked_area[j] += scale2
                            area[j] += scale2
                else:
                    value = scale2 * pixel
                    for k in range(n):
                        j = rings[k]
                        if j < ANNULI:
                            total[j] += value
                            area[j] += scale2
            else:
                j = int(rpix * step_density)
                if j < ANNULI:
                    if is_masked:
                        masked_area[j] += 1.0
                    else:
                        total[j] += pixel
                    area[j] += 1.0
    for j in range(ANNULI):
        total[j] *= 0.0 if area[j] == masked_area[j] else area[j] / (area[j] - masked_area[j])
    return flag


@njit(parallel=True, cache=True)
def _flux_radii(data, mask, xs, ys, rmaxes, fraction, subpix):
    radius = np.empty(xs.size)
    flags = np.zeros(xs.size, dtype=np.int16)
    for n in prange(xs.size):
        total = np.zeros(ANNULI)
        area = np.zeros(ANNULI)
        masked_area = np.zeros(ANNULI)
        rmax = rmaxes[n]
        if not (rmax > 0.0 and np.isfinite(rmax) and np.isfinite(xs[n]) and np.isfinite(ys[n])):
            radius[n] = np.nan  # no aperture to measure (sep's arithmetic is undefined there)
            continue
        flags[n] = _annuli(data, mask, xs[n], ys[n], rmax, subpix, total, area, masked_area)
        for j in range(1, ANNULI):
            total[j] += total[j - 1]
        target = fraction * total[ANNULI - 1]
        # sep's inverse(): the first annulus whose cumulative light reaches the target, interpolated.
        step = rmax / ANNULI
        j = 0
        while j < ANNULI and total[j] < target:
            j += 1
        if j == 0:
            radius[n] = 0.0 if (target <= 0.0 or total[0] == 0.0) else step * target / total[0]
        elif j == ANNULI:
            radius[n] = rmax
        else:
            radius[n] = step * (j + (target - total[j - 1]) / (total[j] - total[j - 1]))
    return radius, flags


def flux_radius(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    rmax: np.ndarray,
    fraction: float,
    mask: np.ndarray | None = None,
    subpix: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Radius (pixels) of the circle about each (x, y) (0-based pixel centres) that holds
    ``fraction`` of the light within ``rmax`` (pixels, one per source), and sep's aperture flags
    (:data:`APERTURE_TRUNCATED`, :data:`APERTURE_HAS_MASKED`); ``sep.flux_radius(data, x, y, rmax,
    fraction, mask=mask, normflux=None, subpix=subpix)`` bit for bit. ``mask`` pixels that are True
    are left out. A source without a finite position or a positive, finite ``rmax`` gets NaN."""
    if subpix < 1:
        raise ValueError(f"subpix must be at least 1, got {subpix}")
    data = np.ascontiguousarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be 2-d, got shape {data.shape}")
    if mask is None:
        mask = np.zeros(data.shape, dtype=np.bool_)
    elif mask.shape != data.shape:
        raise ValueError(f"mask has shape {mask.shape}, the data {data.shape}")
    xs, ys, rmaxes = (np.ascontiguousarray(np.ravel(v), dtype=np.float64) for v in (x, y, rmax))
    if not xs.size == ys.size == rmaxes.size:
        raise ValueError("x, y and rmax must have one value per source")
    return _flux_radii(
        data, np.ascontiguousarray(mask, dtype=np.bool_), xs, ys, rmaxes, float(fraction), int(subpix)
    )


@njit(parallel=True, cache=True)
def _any_in_circles(flagged, xs, ys, radius):
    height, width = flagged.shape
    found = np.zeros(xs.size, dtype=np.bool_)
    r2 = radius * radius
    reach = radius + 0.7072  # sep's outer bound of the pixels an aperture may touch
    for n in prange(xs.size):
        x, y = xs[n], ys[n]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        xmin, xmax, ymin, ymax, _ = _box(x, y, reach, width, height)
        for iy in range(ymin, ymax):
            dy = iy - y
            for ix in range(xmin, xmax):
                dx = ix - x
                if flagged[iy, ix] and dx * dx + dy * dy < r2:
                    found[n] = True
                    break
            if found[n]:
                break
    return found


def any_in_circles(flagged: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Whether a ``flagged`` pixel lies in the circle of ``radius`` pixels about each (x, y) (0-based
    pixel centres): the pixels ``sep.sum_circle(flagged, x, y, radius, subpix=1)`` counts, those
    whose centre is nearer than the radius, without summing a float64 copy of the image."""
    flagged = np.ascontiguousarray(flagged, dtype=np.bool_)
    if flagged.ndim != 2:
        raise ValueError(f"flagged must be 2-d, got shape {flagged.shape}")
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    xs, ys = (np.ascontiguousarray(np.ravel(v), dtype=np.float64) for v in (x, y))
    if xs.size != ys.size:
        raise ValueError("x and y must have one value per source")
    return _any_in_circles(flagged, xs, ys, float(radius))
