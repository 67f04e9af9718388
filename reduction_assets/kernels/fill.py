"""Filling flagged pixels from their neighbours (numba): the work is proportional to the flagged
pixels, not to the image."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def fill_from_neighbours(
    image: np.ndarray, masked: np.ndarray, usable: np.ndarray, half_width: int, widest: int
) -> np.ndarray:
    """A float64 copy of ``image`` whose ``masked`` pixels hold the mean of the ``usable``, unmasked
    pixels of the (2 w + 1)^2 box around them (clipped at the edges), w = ``half_width`` doubled
    until the box holds one or w exceeds ``widest`` (then the pixel keeps its value)."""
    ny, nx = image.shape
    filled = image.astype(np.float64)
    ys, xs = np.nonzero(masked)
    for n in prange(ys.size):
        y, x = ys[n], xs[n]
        width = half_width
        while width <= widest:
            total = 0.0
            count = 0
            for v in range(max(y - width, 0), min(y + width + 1, ny)):
                for u in range(max(x - width, 0), min(x + width + 1, nx)):
                    if usable[v, u] and not masked[v, u]:
                        total += image[v, u]
                        count += 1
            if count:
                filled[y, x] = total / count
                break
            width *= 2
    return filled
