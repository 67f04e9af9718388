"""Pixel neighbourhoods (numba): the bright isolated peaks of a background-subtracted image (the
stars to measure the seeing on, found in one parallel pass over the pixels instead of a full source
extraction), and flags near given positions."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _peak_rows(
    signal: np.ndarray, err: np.ndarray, mask: np.ndarray, threshold: float, half_width: int
) -> np.ndarray:
    ny, nx = signal.shape
    found = np.zeros((ny, nx), dtype=np.bool_)
    for y in prange(half_width, ny - half_width):
        for x in range(half_width, nx - half_width):
            peak = signal[y, x]
            if mask[y, x] or not peak > threshold * err[y, x]:
                continue
            keep = True
            for v in range(y - half_width, y + half_width + 1):
                for u in range(x - half_width, x + half_width + 1):
                    if (
                        mask[v, u]
                        or signal[v, u] > peak
                        or (signal[v, u] == peak and (v < y or (v == y and u < x)))
                    ):
                        keep = False
                        break
                if not keep:
                    break
            found[y, x] = keep
    return found


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
    return np.nonzero(found)


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
