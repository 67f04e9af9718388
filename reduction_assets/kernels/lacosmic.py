"""L.A.Cosmic (van Dokkum 2001) in numba, following astroscrappy's implementation step by step (its
separable median filters, fine-scale Laplacian on the 2x subsampled image, fine-structure image,
neighbour growth, masked-mean cleaning between iterations, and its edge conventions), so that the
masks agree with astroscrappy's pixel for pixel but for float rounding at the thresholds.

Arrays are float32 as in astroscrappy; the filters run in parallel over rows (numba threads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from reduction_assets.kernels.select import lower_median


@dataclass(frozen=True)
class LACosmicSettings:
    """astroscrappy's parameters of the same names (electrons throughout: gain 1)."""

    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    readnoise: float = 6.5  # e-
    satlevel: float = np.inf  # e-
    niter: int = 4


# Median selection networks (Devillard's, as astroscrappy's PyOptMed5/7/9): after these
# compare-exchanges the median is the middle argument. Written on scalars in a loop over a row, they
# compile to vectorised min/max across pixels.


@njit(cache=True, inline="always")
def _exchange(a, b):
    return (a, b) if a < b else (b, a)


@njit(cache=True, inline="always")
def _median5(p0, p1, p2, p3, p4):
    p0, p1 = _exchange(p0, p1)
    p3, p4 = _exchange(p3, p4)
    p0, p3 = _exchange(p0, p3)
    p1, p4 = _exchange(p1, p4)
    p1, p2 = _exchange(p1, p2)
    p2, p3 = _exchange(p2, p3)
    p1, p2 = _exchange(p1, p2)
    return p2


@njit(cache=True, inline="always")
def _median7(p0, p1, p2, p3, p4, p5, p6):
    p0, p5 = _exchange(p0, p5)
    p0, p3 = _exchange(p0, p3)
    p1, p6 = _exchange(p1, p6)
    p2, p4 = _exchange(p2, p4)
    p0, p1 = _exchange(p0, p1)
    p3, p5 = _exchange(p3, p5)
    p2, p6 = _exchange(p2, p6)
    p2, p3 = _exchange(p2, p3)
    p3, p6 = _exchange(p3, p6)
    p4, p5 = _exchange(p4, p5)
    p1, p4 = _exchange(p1, p4)
    p1, p3 = _exchange(p1, p3)
    p3, p4 = _exchange(p3, p4)
    return p3


@njit(cache=True, inline="always")
def _median9(p0, p1, p2, p3, p4, p5, p6, p7, p8):
    p1, p2 = _exchange(p1, p2)
    p4, p5 = _exchange(p4, p5)
    p7, p8 = _exchange(p7, p8)
    p0, p1 = _exchange(p0, p1)
    p3, p4 = _exchange(p3, p4)
    p6, p7 = _exchange(p6, p7)
    p1, p2 = _exchange(p1, p2)
    p4, p5 = _exchange(p4, p5)
    p7, p8 = _exchange(p7, p8)
    p0, p3 = _exchange(p0, p3)
    p5, p8 = _exchange(p5, p8)
    p4, p7 = _exchange(p4, p7)
    p3, p6 = _exchange(p3, p6)
    p1, p4 = _exchange(p1, p4)
    p2, p5 = _exchange(p2, p5)
    p4, p7 = _exchange(p4, p7)
    p4, p2 = _exchange(p4, p2)
    p6, p4 = _exchange(p6, p4)
    p4, p2 = _exchange(p4, p2)
    return p4


_BAND = 32  # output rows per task of the separable median (a band and its margins fit in L2)


@njit(parallel=True, cache=True)
def _separable_median(data: np.ndarray, half: int) -> np.ndarray:
    ny, nx = data.shape
    # Each thread takes bands of output rows and filters along the rows only the rows its band
    # needs (the band and ``half`` more on each side) into a buffer that stays in cache, instead of
    # a whole intermediate image written and read back (and copies made on one thread).
    out = np.empty_like(data)
    edge = min(half, nx)
    for band in prange((ny + _BAND - 1) // _BAND):
        j0 = band * _BAND
        j1 = min(ny, j0 + _BAND)
        r0 = max(0, j0 - half)
        rows = np.empty((min(ny, j1 + half) - r0, nx), dtype=data.dtype)
        for j in range(r0, r0 + rows.shape[0]):
            r = data[j]
            o = rows[j - r0]
            o[:edge] = r[:edge]
            o[nx - edge :] = r[nx - edge :]
            if half == 2:
                for i in range(2, nx - 2):
                    o[i] = _median5(r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2])
            elif half == 3:
                for i in range(3, nx - 3):
                    o[i] = _median7(r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2], r[i + 3])
            else:
                for i in range(4, nx - 4):
                    o[i] = _median9(
                        r[i - 4], r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2], r[i + 3], r[i + 4]
                    )
        for j in range(j0, j1):
            o = out[j]
            if j < half or j >= ny - half:
                o[:] = data[j]
                continue
            o[:edge] = data[j, :edge]
            o[nx - edge :] = data[j, nx - edge :]
            m = j - r0
            if half == 2:
                a, b, c, d, e = rows[m - 2], rows[m - 1], rows[m], rows[m + 1], rows[m + 2]
                for i in range(2, nx - 2):
                    o[i] = _median5(a[i], b[i], c[i], d[i], e[i])
            elif half == 3:
                a, b, c, d, e, f, g = (
                    rows[m - 3],
                    rows[m - 2],
                    rows[m - 1],
                    rows[m],
                    rows[m + 1],
                    rows[m + 2],
                    rows[m + 3],
                )
                for i in range(3, nx - 3):
                    o[i] = _median7(a[i], b[i], c[i], d[i], e[i], f[i], g[i])
            else:
                a, b, c, d, e = rows[m - 4], rows[m - 3], rows[m - 2], rows[m - 1], rows[m]
                f, g, h, k = rows[m + 1], rows[m + 2], rows[m + 3], rows[m + 4]
                for i in range(4, nx - 4):
                    o[i] = _median9(a[i], b[i], c[i], d[i], e[i], f[i], g[i], h[i], k[i])
    return out


def separable_median(data: np.ndarray, half: int) -> np.ndarray:
    """astroscrappy's ``sepmedfilt{2 half + 1}`` (float32, ``half`` 2, 3 or 4): the median along rows,
    then along columns; the ``half`` outermost rows and columns keep the input's values."""
    if half not in (2, 3, 4):
        raise ValueError(f"half width {half}: 2, 3 or 4 (filters of 5, 7 or 9)")
    return _separable_median(np.ascontiguousarray(data, dtype=np.float32), half)


@njit(cache=True, inline="always")
def _positive(value: np.float32) -> np.float32:
    return value if value > 0 else np.float32(0.0)


@njit(parallel=True, cache=True)
def fine_laplacian(image: np.ndarray) -> np.ndarray:
    """astroscrappy's ``rebin(clip(laplaceconvolve(subsample(image)) < 0 -> 0))``, computed on the
    original grid: each pixel's four subpixels get the Laplacian with their neighbours (the pixel
    itself on two sides), negative values are set to 0 and the four are averaged. Neighbours beyond
    the image are left out, as astroscrappy does."""
    ny, nx = image.shape
    out = np.empty((ny, nx), dtype=np.float32)
    four = np.float32(4.0)
    for y in prange(ny):
        for x in range(nx):
            v = image[y, x]
            p = four * v
            # (2y, 2x): right and down are the pixel itself; left and up its neighbours
            top_left = p - v
            if x > 0:
                top_left -= image[y, x - 1]
            top_left -= v
            if y > 0:
                top_left -= image[y - 1, x]
            # (2y, 2x + 1): left and down are the pixel itself
            top_right = p
            if x < nx - 1:
                top_right -= image[y, x + 1]
            top_right -= v
            top_right -= v
            if y > 0:
                top_right -= image[y - 1, x]
            # (2y + 1, 2x): right and up are the pixel itself
            bottom_left = p - v
            if x > 0:
                bottom_left -= image[y, x - 1]
            if y < ny - 1:
                bottom_left -= image[y + 1, x]
            bottom_left -= v
            # (2y + 1, 2x + 1): left and up are the pixel itself
            bottom_right = p
            if x < nx - 1:
                bottom_right -= image[y, x + 1]
            bottom_right -= v
            if y < ny - 1:
                bottom_right -= image[y + 1, x]
            bottom_right -= v
            total = _positive(top_left)
            total += _positive(bottom_left)
            total += _positive(bottom_right)
            total += _positive(top_right)
            out[y, x] = total / four
    return out


@njit(parallel=True, cache=True)
def dilate3(mask: np.ndarray) -> np.ndarray:
    """astroscrappy's ``dilate3``: any of the 3x3 neighbourhood; the outermost rows and columns keep
    the input's values."""
    ny, nx = mask.shape
    out = mask.copy()
    for j in prange(1, ny - 1):
        for i in range(1, nx - 1):
            hit = False
            for dj in range(-1, 2):
                for di in range(-1, 2):
                    if mask[j + dj, i + di]:
                        hit = True
            out[j, i] = hit
    return out


@njit(parallel=True, cache=True)
def clean_meanmask(values: np.ndarray, crmask: np.ndarray, mask: np.ndarray, background: float) -> None:
    """astroscrappy's ``clean_meanmask`` in place: each flagged pixel (2 or more from the edges) gets
    the mean of the unflagged, unmasked pixels of its 5x5 neighbourhood, or ``background``."""
    ny, nx = values.shape
    for j in prange(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                total = np.float32(0.0)
                count = 0
                for dj in range(-2, 3):
                    for di in range(-2, 3):
                        if not (crmask[j + dj, i + di] or mask[j + dj, i + di]):
                            total += values[j + dj, i + di]
                            count += 1
                values[j, i] = np.float32(background) if count == 0 else total / np.float32(count)


def detect_cosmics(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    settings: LACosmicSettings = LACosmicSettings(),
    *,
    overwrite_input: bool = False,
) -> np.ndarray:
    """The L.A.Cosmic cosmic-ray mask (bool) of ``image`` (e-), as astroscrappy's ``detect_cosmics``
    with ``gain=1``, ``sepmed=True``, ``cleantype='meanmask'``, ``fsmode='median'``: ``mask``
    (True: ignore) is grown by one pixel; ``variance`` (e-^2) replaces the noise model
    ``image + readnoise^2``. With ``overwrite_input`` an ``image`` and ``variance`` that are
    writable C-contiguous float32 arrays are cleaned in place (their values are lost) instead of
    copied."""
    clean = _working_copy(image, overwrite_input)
    ny, nx = clean.shape
    # Only read: dilate3 makes the grown mask a new array.
    ignore = (
        np.zeros((ny, nx), dtype=np.bool_) if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    )
    if variance is None:
        clean_var = clean + np.float32(settings.readnoise * settings.readnoise)
    else:
        clean_var = _working_copy(variance, overwrite_input)
    if np.isfinite(settings.satlevel):
        saturated = (clean >= settings.satlevel) & (separable_median(clean, 3) > settings.satlevel / 10.0)
        grown = saturated
        for _ in range(2):  # astroscrappy's dilate5 twice
            grown = _dilate5(grown)
        ignore = grown | dilate3(ignore)
    else:
        ignore = dilate3(ignore)
    good = ~ignore
    background = lower_median(clean, good)
    background_var = lower_median(clean_var, good)
    crmask = np.zeros((ny, nx), dtype=np.bool_)
    sigcliplow = np.float32(settings.sigfrac * settings.sigclip)
    sigclip = np.float32(settings.sigclip)
    objlim = np.float32(settings.objlim)
    for _ in range(settings.niter):
        s = fine_laplacian(clean)
        noise = _noise_and_scale(separable_median(clean_var, 3), s)
        fine = separable_median(clean, 2)
        sp, cosmics = _candidates(s, separable_median(s, 3), fine, separable_median(fine, 4), noise, good,
                                  sigclip, objlim)  # fmt: skip
        cosmics = _grow(cosmics, good, sp, sigclip)
        cosmics = _grow(cosmics, good, sp, sigcliplow)
        crmask |= cosmics
        if not cosmics.any():
            break
        clean_meanmask(clean, crmask, ignore, background)
        clean_meanmask(clean_var, crmask, ignore, background_var)
    return crmask


def _working_copy(values: np.ndarray, overwrite: bool) -> np.ndarray:
    """``values`` as a C-contiguous float32 array that may be changed: itself when allowed and
    already one, else a copy."""
    if (
        overwrite
        and isinstance(values, np.ndarray)
        and values.dtype == np.float32
        and values.flags.c_contiguous
        and values.flags.writeable
    ):
        return values
    return np.array(values, dtype=np.float32, order="C")


@njit(parallel=True, cache=True)
def _noise_and_scale(m5: np.ndarray, s: np.ndarray) -> np.ndarray:
    """noise = sqrt(max(m5, 1e-5)); s /= 2 noise in place (float32, as astroscrappy's numpy steps)."""
    ny, nx = m5.shape
    noise = np.empty((ny, nx), dtype=np.float32)
    floor = np.float32(0.00001)
    two = np.float32(2.0)
    for j in prange(ny):
        for i in range(nx):
            value = np.sqrt(m5[j, i] if m5[j, i] >= floor else floor)
            noise[j, i] = value
            s[j, i] = s[j, i] / (two * value)
    return noise


@njit(parallel=True, cache=True)
def _candidates(s, s_median, fine, fine_median, noise, good, sigclip, objlim):
    """sp = s - median(s); candidates: sp above sigclip, not ignored, and sp over the fine-structure
    contrast (f - median(f)) / noise (at least 0.01) above objlim."""
    ny, nx = s.shape
    sp = np.empty((ny, nx), dtype=np.float32)
    cosmics = np.empty((ny, nx), dtype=np.bool_)
    least = np.float32(0.01)
    for j in prange(ny):
        for i in range(nx):
            value = s[j, i] - s_median[j, i]
            contrast = (fine[j, i] - fine_median[j, i]) / noise[j, i]
            if contrast < least:
                contrast = least
            sp[j, i] = value
            cosmics[j, i] = value > sigclip and good[j, i] and value / contrast > objlim
    return sp, cosmics


@njit(parallel=True, cache=True)
def _grow(cosmics, good, sp, threshold) -> np.ndarray:
    """dilate3(cosmics), kept where not ignored and sp is above ``threshold``."""
    grown = dilate3(cosmics)
    ny, nx = grown.shape
    for j in prange(ny):
        for i in range(nx):
            grown[j, i] = grown[j, i] and good[j, i] and sp[j, i] > threshold
    return grown


@njit(parallel=True, cache=True)
def _dilate5(mask: np.ndarray) -> np.ndarray:
    """astroscrappy's ``dilate5`` once: the 5x5 neighbourhood without its corners; the two outermost
    rows and columns keep the input's values."""
    ny, nx = mask.shape
    out = mask.copy()
    for j in prange(2, ny - 2):
        for i in range(2, nx - 2):
            hit = False
            for dj in range(-2, 3):
                for di in range(-2, 3):
                    if abs(dj) == 2 and abs(di) == 2:
                        continue
                    if mask[j + dj, i + di]:
                        hit = True
            out[j, i] = hit
    return out
