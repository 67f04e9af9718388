"""Sorting networks: fixed sequences of compare-exchange steps that sort any input of length n.

A network's steps do not depend on the data, so the same step can be applied to many pixels at once
(the frame axis of a tile of pixels): the compare-exchanges vectorise across pixels.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def batcher_network(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Batcher's odd-even merge sort network for ``n`` inputs, as two index arrays (i < j).

    After applying ``a[i], a[j] = min(a[i], a[j]), max(a[i], a[j])`` for every pair in order, ``a`` is
    sorted ascending. Works for any ``n`` (Knuth, TAOCP vol. 3, 5.3.4, Algorithm M): O(n log² n) steps.
    """
    first: list[int] = []
    second: list[int] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        first.append(i + j)
                        second.append(i + j + k)
            k //= 2
        p *= 2
    return np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)
