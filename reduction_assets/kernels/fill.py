"""Filling flagged pixels from their neighbours (numba): the work is proportional to the flagged
pixels, not to the image."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def neighbour_means(
    image: np.ndarray,
    masked: np.ndarray,
    usable: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    half_width: int,
    widest: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel (``ys``, ``xs``): the mean (float64, summed in float64) of the ``usable``,
    unmasked pixels of ``image`` in the (2 w + 1)^2 box around it (clipped at the edges),
    w = ``half_width`` doubled until the box holds one, and whether one was found before w
    exceeded ``widest`` (where not, the mean is NaN)."""
    ny, nx = image.shape
    means = np.full(ys.size, np.nan)
    found = np.zeros(ys.size, dtype=np.bool_)
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
                means[n] = total / count
                found[n] = True
                break
            width *= 2
    return means, found
