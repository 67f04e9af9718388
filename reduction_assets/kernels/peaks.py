"""Pixel neighbourhoods (numba): the bright isolated peaks of a background-subtracted image (the
stars to measure the seeing on, found in one parallel pass over the pixels instead of a full source
extraction), and flags near given positions."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from reduction_assets.kernels.bits import flagged_positions


@njit(cache=True, inline="always")
def _highest_in_box(signal: np.ndarray, mask: np.ndarray, y: int, x: int, half_width: int) -> bool:
    """Whether (y, x) is the highest pixel of its box (the first of equal values, row-major), with
    no masked pixel in it; the box must lie inside the image."""
    peak = signal[y, x]
    for v in range(y - half_width, y + half_width + 1):
        for u in range(x - half_width, x + half_width + 1):
            if mask[v, u] or signal[v, u] > peak or (signal[v, u] == peak and (v < y or (v == y and u < x))):
                return False
    return True


@njit(parallel=True, cache=True)
def _peak_rows(
    signal: np.ndarray, err: np.ndarray, mask: np.ndarray, threshold: float, half_width: int
) -> np.ndarray:
    ny, nx = signal.shape
    found = np.zeros((ny, nx), dtype=np.bool_)
    for y in prange(half_width, ny - half_width):
        for x in range(half_width, nx - half_width):
            if mask[y, x] or not signal[y, x] > threshold * err[y, x]:
                continue
            found[y, x] = _highest_in_box(signal, mask, y, x, half_width)
    return found


@njit(parallel=True, cache=True)
def _still_isolated(signal: np.ndarray, mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, half_width: int):
    ny, nx = signal.shape
    keep = np.zeros(ys.size, dtype=np.bool_)
    for n in prange(ys.size):
        y, x = ys[n], xs[n]
        if half_width <= y < ny - half_width and half_width <= x < nx - half_width:
            keep[n] = _highest_in_box(signal, mask, y, x, half_width)
    return keep


def still_isolated(
    signal: np.ndarray, mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, half_width: int
) -> np.ndarray:
    """Which of the peaks (``ys``, ``xs``) that :func:`isolated_peaks` found with a smaller box are
    isolated peaks of the (2 ``half_width`` + 1)^2 box too: a peak of a box is a peak of every
    smaller one, so this gives isolated_peaks(..., half_width) without another pass over the image."""
    return _still_isolated(
        np.ascontiguousarray(signal),
        np.ascontiguousarray(mask, dtype=np.bool_),
        np.asarray(ys, dtype=np.int64),
        np.asarray(xs, dtype=np.int64),
        int(half_width),
    )


def isolated_peaks(
    signal: np.ndarray, err: np.ndarray, mask: np.ndarray, threshold: float, half_width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels above ``threshold`` x ``err`` that are the highest of the
    (2 ``half_width`` + 1)^2 box around them (the first of equal values), with no ``mask`` pixel in
    that box and the box inside the image; in row-major order."""
    found = _peak_rows(
        np.ascontiguousarray(signal),
        np.ascontiguousarray(err),
        np.ascontiguousarray(mask, dtype=np.bool_),
        float(threshold),
        int(half_width),
    )
    return flagged_positions(found)


@njit(cache=True)
def _any_near(flagged: np.ndarray, rows: np.ndarray, columns: np.ndarray, half_width: int) -> np.ndarray:
    ny, nx = flagged.shape
    near = np.zeros(rows.size, dtype=np.bool_)
    for n in range(rows.size):
        for v in range(max(rows[n] - half_width, 0), min(rows[n] + half_width + 1, ny)):
            for u in range(max(columns[n] - half_width, 0), min(columns[n] + half_width + 1, nx)):
                if flagged[v, u]:
                    near[n] = True
    return near


def any_flagged_near(flagged: np.ndarray, x: np.ndarray, y: np.ndarray, half_width: int) -> np.ndarray:
    """Whether the (2 ``half_width`` + 1)^2 box about each position (x, y rounded to the nearest
    pixel, half to even; the box clipped at the image's edges) holds a ``flagged`` pixel."""
    rows = np.round(np.asarray(y, dtype=np.float64)).astype(np.int64)
    columns = np.round(np.asarray(x, dtype=np.float64)).astype(np.int64)
    return any_flagged_in_box(flagged, rows, columns, half_width)


def any_flagged_in_box(
    flagged: np.ndarray, rows: np.ndarray, columns: np.ndarray, half_width: int
) -> np.ndarray:
    """Whether the (2 ``half_width`` + 1)^2 box about each pixel (``rows``, ``columns``: integer
    indices; the box clipped at the image's edges) holds a ``flagged`` pixel."""
    rows = np.asarray(rows, dtype=np.int64)
    columns = np.asarray(columns, dtype=np.int64)
    if rows.shape != columns.shape:
        raise ValueError(f"{rows.size} rows and {columns.size} columns: one of each per position")
    return _any_near(
        np.ascontiguousarray(flagged, dtype=np.bool_), rows.ravel(), columns.ravel(), int(half_width)
    )
