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
    # Annuli narrower than a pixel's diagonal (rmax below 90 px): every pixel straddles one, whatever
    # its distance modulo the step (d < near_previous, or d >= near_previous > near_next), so
    # that remainder (a libm call per pixel) is not needed.
    every_pixel_sampled = near_next < near_previous
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
            if every_pixel_sampled or not near_previous <= np.fmod(rpix, step) <= near_next:
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


# Aperture sums and windowed positions as sep computes them (sep_sum_circle, sep_windowed and the
# exact overlap of a pixel and a circle, circoverlap), the same arithmetic in the same order, so
# the results are sep's to the last bit; the sources are shared among threads.

_OVERSAMPLED = 0.7072  # sep: pixels nearer the circle than this (half a diagonal) are sub-sampled
WINDOW_ITERATIONS = 16  # sep's WINPOS_NITERMAX
WINDOW_NSIG = 4.0  # sep's WINPOS_NSIG: the window's radius in sigmas
WINDOW_STEP_MIN = 0.0001  # sep's WINPOS_STEPMIN (pixels)
WINDOW_FACTOR = 2.0  # sep's WINPOS_FAC
WINDOW_MIN_SIGMA = 2.0 / 2.35 * 0.5  # sep.winpos' minsig: Source Extractor's 0.5 px half-light radius


@njit(cache=True, inline="always")
def _area_arc(x1, y1, x2, y2, r):
    a = math.sqrt((x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1))
    theta = 2.0 * math.asin(0.5 * a / r)
    return 0.5 * r * r * (theta - math.sin(theta))


@njit(cache=True, inline="always")
def _area_triangle(x1, y1, x2, y2, x3, y3):
    return 0.5 * abs(x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2))


@njit(cache=True)
def _overlap_core(xmin, ymin, xmax, ymax, r):
    """Area of the rectangle inside the circle of radius r about the origin, for
    xmax >= xmin >= 0 and ymax >= ymin >= 0 (sep's circoverlap_core)."""
    xmin2 = xmin * xmin
    ymin2 = ymin * ymin
    r2 = r * r
    if xmin2 + ymin2 > r2:
        return 0.0
    xmax2 = xmax * xmax
    ymax2 = ymax * ymax
    if xmax2 + ymax2 < r2:
        return (xmax - xmin) * (ymax - ymin)
    a = xmax2 + ymin2
    b = xmin2 + ymax2
    if a < r2 and b < r2:
        x1 = math.sqrt(r2 - ymax2)
        x2 = xmax
        y2 = math.sqrt(r2 - xmax2)
        return (
            (xmax - xmin) * (ymax - ymin)
            - _area_triangle(x1, ymax, x2, y2, xmax, ymax)
            + _area_arc(x1, ymax, x2, y2, r)
        )
    if a < r2:
        y1 = math.sqrt(r2 - xmin2)
        y2 = math.sqrt(r2 - xmax2)
        return (
            _area_arc(xmin, y1, xmax, y2, r)
            + _area_triangle(xmin, y1, xmin, ymin, xmax, ymin)
            + _area_triangle(xmin, y1, xmax, ymin, xmax, y2)
        )
    if b < r2:
        x1 = math.sqrt(r2 - ymin2)
        x2 = math.sqrt(r2 - ymax2)
        return (
            _area_arc(x1, ymin, x2, ymax, r)
            + _area_triangle(x1, ymin, xmin, ymin, xmin, ymax)
            + _area_triangle(x1, ymin, xmin, ymax, x2, ymax)
        )
    x1 = math.sqrt(r2 - ymin2)
    y2 = math.sqrt(r2 - xmin2)
    return _area_arc(x1, ymin, xmin, y2, r) + _area_triangle(x1, ymin, xmin, y2, xmin, ymin)


@njit(cache=True, inline="always")
def _overlap_quadrant(xmin, ymin, xmax, ymax, r):
    """sep's circoverlap for a rectangle within one quadrant (0 <= xmin or xmax <= 0, and the same
    for y), turned into the first quadrant with sep's sign changes."""
    if xmin >= 0.0:
        if ymin >= 0.0:
            return _overlap_core(xmin, ymin, xmax, ymax, r)
        return _overlap_core(-ymax, xmin, -ymin, xmax, r)
    if ymin >= 0.0:
        return _overlap_core(-xmax, ymin, -xmin, ymax, r)
    return _overlap_core(-xmax, -ymax, -xmin, -ymin, r)


@njit(cache=True)
def circle_overlap(xmin, ymin, xmax, ymax, r):
    """Area (pixels²) of the rectangle [xmin, xmax] x [ymin, ymax] inside the circle of radius ``r``
    about the origin: sep's circoverlap, which splits a rectangle that straddles an axis at it (the
    pieces added in sep's order)."""
    if r <= 0.0:
        return 0.0
    x_straddles = xmin < 0.0 < xmax
    y_straddles = ymin < 0.0 < ymax
    if x_straddles and y_straddles:
        return (
            _overlap_quadrant(xmin, ymin, 0.0, 0.0, r)
            + _overlap_quadrant(0.0, ymin, xmax, 0.0, r)
            + _overlap_quadrant(xmin, 0.0, 0.0, ymax, r)
            + _overlap_quadrant(0.0, 0.0, xmax, ymax, r)
        )
    if x_straddles:
        return _overlap_quadrant(xmin, ymin, 0.0, ymax, r) + _overlap_quadrant(0.0, ymin, xmax, ymax, r)
    if y_straddles:
        return _overlap_quadrant(xmin, ymin, xmax, 0.0, r) + _overlap_quadrant(xmin, 0.0, xmax, ymax, r)
    return _overlap_quadrant(xmin, ymin, xmax, ymax, r)


@njit(cache=True, inline="always")
def _circle(r, subpix):
    """What sep's apertures of radius ``r`` need per pixel: r, r², the squared radii inside and
    outside which no pixel straddles the circle (oversamp_ann_circle: half a diagonal, 0.7072 px),
    and the sub-pixel grid (subpix, step, a sub-pixel's area, the first one's offset)."""
    inner = r - _OVERSAMPLED
    outer = r + _OVERSAMPLED
    scale = 1.0 / subpix if subpix > 0 else 0.0
    inner2 = inner * inner if inner > 0.0 else 0.0
    return r, r * r, inner2, outer * outer, subpix, scale, scale * scale, 0.5 * (scale - 1.0)


@njit(cache=True, inline="always")
def _overlap_at(circle, dx, dy):
    """The squared distance of the pixel at (dx, dy) from the centre and the fraction of it inside
    the circle (-1 beyond the pixels sep visits): exact (``subpix`` 0) or counted on a subpix x
    subpix grid, the offsets stepping by repeated addition as sep's do."""
    r, r2, r_in2, r_out2, subpix, scale, scale2, offset = circle
    rpix2 = dx * dx + dy * dy
    if not rpix2 < r_out2:
        return rpix2, -1.0
    if not rpix2 > r_in2:
        return rpix2, 1.0
    if subpix == 0:
        return rpix2, circle_overlap(dx - 0.5, dy - 0.5, dx + 0.5, dy + 0.5, r)
    dx += offset
    dy += offset
    overlap = 0.0
    for _ in range(subpix):
        dx1 = dx
        dy2 = dy * dy
        for _ in range(subpix):
            if dx1 * dx1 + dy2 < r2:
                overlap += scale2
            dx1 += scale
        dy += scale
    return rpix2, overlap


@njit(cache=True, error_model="numpy")
def _sum_circle(data, err, use_err, mask, use_mask, x, y, r, subpix):
    height, width = data.shape
    circle = _circle(r, subpix)
    xmin, xmax, ymin, ymax, truncated = _box(x, y, r, width, height)
    flag = APERTURE_TRUNCATED if truncated else 0
    total = 0.0
    variance = 0.0
    area = 0.0
    masked_area = 0.0
    variance_pixel = np.float32(0.0)
    for iy in range(ymin, ymax):
        for ix in range(xmin, xmax):
            _, overlap = _overlap_at(circle, ix - x, iy - y)
            if overlap < 0.0:
                continue
            # sep reads pixels as float32 and squares the error in float32.
            pixel = np.float64(np.float32(data[iy, ix]))
            if use_err:
                e = np.float32(err[iy, ix])
                variance_pixel = e * e
            if use_mask and mask[iy, ix]:
                flag |= APERTURE_HAS_MASKED
                masked_area += overlap
            else:
                total += pixel * overlap
                variance += np.float64(variance_pixel) * overlap
            area += overlap
    if use_mask:
        # sep scales the unmasked sum up to the whole area (NaN for an aperture with no area).
        correction = area / (area - masked_area)
        total *= correction
        variance *= correction
    return total, math.sqrt(variance), flag


@njit(parallel=True, cache=True)
def _sum_circles(data, err, use_err, mask, use_mask, xs, ys, radii, subpix):
    sums = np.empty(xs.size)
    errors = np.empty(xs.size)
    flags = np.zeros(xs.size, dtype=np.int16)
    for n in prange(xs.size):
        if not (np.isfinite(xs[n]) and np.isfinite(ys[n])):
            sums[n] = np.nan
            errors[n] = np.nan
            continue
        sums[n], errors[n], flags[n] = _sum_circle(
            data, err, use_err, mask, use_mask, xs[n], ys[n], radii[n], subpix
        )
    return sums, errors, flags


@njit(cache=True, error_model="numpy")
def _windowed(data, mask, use_mask, x, y, sig, subpix):
    height, width = data.shape
    inverse_two_sig2 = 1.0 / (2.0 * sig * sig)
    r = WINDOW_NSIG * sig
    circle = _circle(r, subpix)
    flag = 0
    for _ in range(WINDOW_ITERATIONS):
        xmin, xmax, ymin, ymax, truncated = _box(x, y, r, width, height)
        if truncated:
            flag |= APERTURE_TRUNCATED
        total = 0.0
        weighted = 0.0
        area = 0.0
        masked_area = 0.0
        masked_weight = 0.0
        dx_sum = 0.0
        dy_sum = 0.0
        masked_dx = 0.0
        masked_dy = 0.0
        for iy in range(ymin, ymax):
            for ix in range(xmin, xmax):
                dx = ix - x
                dy = iy - y
                rpix2, overlap = _overlap_at(circle, dx, dy)
                if overlap < 0.0:
                    continue
                pixel = np.float64(np.float32(data[iy, ix]))
                weight = math.exp(-rpix2 * inverse_two_sig2)
                if use_mask and mask[iy, ix]:
                    flag |= APERTURE_HAS_MASKED
                    masked_area += overlap
                    masked_weight += overlap * weight
                    masked_dx += overlap * weight * dx
                    masked_dy += overlap * weight * dy
                else:
                    total += pixel * overlap
                    weighted_pixel = pixel * overlap * weight
                    weighted += weighted_pixel
                    dx_sum += weighted_pixel * dx
                    dy_sum += weighted_pixel * dy
                area += overlap
        if use_mask:
            # Masked pixels count as the mean unmasked value, as sep does.
            mean = total / (area - masked_area)
            weighted += mean * masked_weight
            dx_sum += mean * masked_dx
            dy_sum += mean * masked_dy
        if not weighted > 0.0:
            break
        dx_sum /= weighted
        dy_sum /= weighted
        x += dx_sum * WINDOW_FACTOR
        y += dy_sum * WINDOW_FACTOR
        if dx_sum * dx_sum + dy_sum * dy_sum < WINDOW_STEP_MIN * WINDOW_STEP_MIN:
            break
    return x, y, flag


@njit(parallel=True, cache=True)
def _windowed_all(data, mask, use_mask, xs, ys, sigmas, subpix):
    out_x = np.empty(xs.size)
    out_y = np.empty(xs.size)
    flags = np.zeros(xs.size, dtype=np.int16)
    for n in prange(xs.size):
        if not (np.isfinite(xs[n]) and np.isfinite(ys[n])):
            out_x[n] = np.nan
            out_y[n] = np.nan
            continue
        out_x[n], out_y[n], flags[n] = _windowed(data, mask, use_mask, xs[n], ys[n], sigmas[n], subpix)
    return out_x, out_y, flags


def _sources(data, mask, x, y, per_source, name):
    """The image as contiguous native floats, the mask as booleans (or None), and the positions and
    one value per source (broadcast from a scalar) as float64 arrays."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be 2-d, got shape {data.shape}")
    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    if mask is not None:
        if mask.shape != data.shape:
            raise ValueError(f"mask has shape {mask.shape}, the data {data.shape}")
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
    xs, ys = (np.ascontiguousarray(np.ravel(v), dtype=np.float64) for v in (x, y))
    if xs.size != ys.size:
        raise ValueError("x and y must have one value per source")
    values = np.ascontiguousarray(np.ravel(per_source), dtype=np.float64)
    if values.size == 1:
        values = np.full(xs.size, values[0])
    if values.size != xs.size:
        raise ValueError(f"{name} must be one value or one per source")
    if not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"{name} must be finite and not negative")
    return data, mask, xs, ys, values


def sum_circle(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    r: float | np.ndarray,
    err: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    subpix: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sum of ``data`` in a circle of radius ``r`` (pixels; one value or one per source) about
    each (x, y) (0-based pixel centres), its error from the per-pixel standard deviations ``err``
    (0 without), and sep's flags: ``sep.sum_circle(data, x, y, r, err=err, mask=mask,
    subpix=subpix)`` bit for bit. Pixels on the circle's edge count by the fraction of a
    ``subpix`` x ``subpix`` grid inside it (0: the exact overlap). ``mask`` pixels that are True are
    left out and the sum scaled up by the whole area over the unmasked area, as sep does. A source
    without a finite position gets NaN."""
    if subpix < 0:
        raise ValueError(f"subpix must not be negative, got {subpix}")
    data, mask, xs, ys, radii = _sources(data, mask, x, y, r, "r")
    if err is not None:
        err = np.asarray(err)
        if err.shape != data.shape:
            raise ValueError(f"err has shape {err.shape}, the data {data.shape}")
        if err.dtype.kind != "f":
            err = err.astype(np.float64)
        err = np.ascontiguousarray(err, dtype=err.dtype.newbyteorder("="))
    return _sum_circles(
        data,
        err if err is not None else np.zeros((1, 1), dtype=np.float32),
        err is not None,
        mask if mask is not None else np.zeros((1, 1), dtype=np.bool_),
        mask is not None,
        xs,
        ys,
        radii,
        int(subpix),
    )


def windowed_positions(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    sig: float | np.ndarray,
    mask: np.ndarray | None = None,
    subpix: int = 11,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source Extractor's windowed positions (0-based pixels) from the starting (x, y), and sep's
    flags: the centroid weighted by a Gaussian of ``sig`` pixels (one value or one per source; at
    least :data:`WINDOW_MIN_SIGMA`) within 4 ``sig``, iterated; ``sep.winpos(data, x, y, sig,
    mask=mask, subpix=subpix)`` bit for bit (``subpix`` 0: the exact overlap of pixels and
    window). ``mask`` pixels that are True count as the mean unmasked value. A source without a
    finite starting position gets NaN."""
    if subpix < 0:
        raise ValueError(f"subpix must not be negative, got {subpix}")
    data, mask, xs, ys, sigmas = _sources(data, mask, x, y, sig, "sig")
    return _windowed_all(
        data,
        mask if mask is not None else np.zeros((1, 1), dtype=np.bool_),
        mask is not None,
        xs,
        ys,
        np.maximum(sigmas, WINDOW_MIN_SIGMA),
        int(subpix),
    )
