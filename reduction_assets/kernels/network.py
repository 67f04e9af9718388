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


BOTH, LOW_ONLY, HIGH_ONLY = 0, 1, 2


@functools.cache
def selection_network(n: int, ranks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batcher's network for ``n`` inputs pruned to the outputs at ``ranks`` (0-based, ascending order).

    Returns the steps' index arrays ``i < j`` and their kind: ``BOTH`` (a full compare-exchange),
    ``LOW_ONLY`` (only ``a[i] = min(a[i], a[j])`` is needed downstream) or ``HIGH_ONLY`` (only
    ``a[j] = max(...)``). After the steps, ``a[r]`` for r in ``ranks`` equals the sorted input's; the
    other positions hold leftovers (not a permutation of the input). Steps that cannot reach a wanted
    output are dropped: for the median of 50 inputs, 330 steps remain of 403, 48 of them halves.
    """
    first, second = batcher_network(n)
    needed = set(ranks)
    kept: list[tuple[int, int, int]] = []
    for i, j in zip(first[::-1].tolist(), second[::-1].tolist(), strict=True):
        low, high = i in needed, j in needed
        if low or high:
            kept.append((i, j, BOTH if low and high else LOW_ONLY if low else HIGH_ONLY))
            needed.update((i, j))
    kept.reverse()
    steps = np.array(kept, dtype=np.int64).reshape(-1, 3)
    return steps[:, 0].copy(), steps[:, 1].copy(), steps[:, 2].copy()
