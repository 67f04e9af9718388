"""Exact medians of large images on every core: numpy's values, without numpy's single-threaded sort.

``np.median`` of a 2048x2048 frame partitions a copy of it on one core (~25 ms, ~40 ms for a masked
selection, which copies first); a science frame takes six such medians. Here the values' bit
patterns become integer keys ordered like the floats (``float_keys``); one parallel pass
counts the keys by their top 16 bits, which tells the bucket holding the wanted rank; a second
pass gathers that bucket's values (a few per cent of a sky image), which numpy then partitions.
The result is the same value as numpy's, bit for bit, including its arithmetic for the mean of the
two middle values of an even count.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from reduction_assets.kernels.float_keys import float_key, key_form

BUCKETS = 1 << 16


@nb.njit(cache=True, inline="always")
def _bucket(values, bits, where, use_where, skip_nan, shift, magnitude, i):
    """The bucket of value ``i`` (the top 16 bits of its key), or -1 when it is not counted (outside
    ``where``, or a NaN skipped). NaN sorts last, whatever its sign bit, as in numpy."""
    if use_where and not where[i]:
        return -1
    if values[i] != values[i]:
        return -1 if skip_nan else BUCKETS - 1
    return (float_key(bits[i], shift, magnitude) >> (shift - 15)) + 32768


@nb.njit(cache=True, inline="always")
def _span(n, chunks, c):
    return c * n // chunks, (c + 1) * n // chunks


@nb.njit(parallel=True, cache=True)
def _count(values, bits, where, use_where, skip_nan, shift, magnitude, chunks):
    """Per chunk of values (one per thread): how many of the counted ones fall in each bucket."""
    n = values.size
    counts = np.zeros((chunks, BUCKETS), dtype=np.int64)
    for c in nb.prange(chunks):
        row = counts[c]
        start, stop = _span(n, chunks, c)
        for i in range(start, stop):
            b = _bucket(values, bits, where, use_where, skip_nan, shift, magnitude, i)
            if b >= 0:
                row[b] += 1
    return counts


@nb.njit(parallel=True, cache=True)
def _gather(values, bits, where, use_where, skip_nan, shift, magnitude, first, last, offsets, out):
    """The counted values whose bucket lies in [first, last], each chunk's at its offset in ``out``."""
    n = values.size
    chunks = offsets.size
    for c in nb.prange(chunks):
        at = offsets[c]
        start, stop = _span(n, chunks, c)
        for i in range(start, stop):
            b = _bucket(values, bits, where, use_where, skip_nan, shift, magnitude, i)
            if first <= b <= last:
                out[at] = values[i]
                at += 1


class _Counted:
    """The values as keys, and how many fall in each bucket per chunk (one parallel pass)."""

    def __init__(self, values: np.ndarray, where: np.ndarray | None, skip_nan: bool):
        form = key_form(values.dtype)
        self.values, self.skip_nan = values, skip_nan
        self.form = (form[0], form[1])  # sign shift, magnitude mask
        self.bits = values.view(form.dtype)
        self.use_where = where is not None
        self.where = where if where is not None else np.zeros(1, dtype=np.bool_)
        chunks = max(1, min(nb.get_num_threads(), values.size // 4096))
        self.counts = _count(values, self.bits, self.where, self.use_where, skip_nan, *self.form, chunks)
        # Only NaNs have keys in the last bucket (its keys are above +inf's).
        self.nans = 0 if skip_nan else int(self.counts[:, BUCKETS - 1].sum())
        self.below = np.cumsum(self.counts.sum(axis=0))  # counted values up to each bucket
        self.counted = int(self.below[-1])

    def ranks(self, ranks: tuple[int, ...]) -> tuple:
        """The values of these ranks (0-based, ascending, adjacent) among the counted values."""
        first = int(np.searchsorted(self.below, ranks[0], side="right"))
        last = int(np.searchsorted(self.below, ranks[-1], side="right"))
        per_chunk = self.counts[:, first : last + 1].sum(axis=1)
        offsets = np.concatenate(([0], np.cumsum(per_chunk)[:-1])).astype(np.int64)
        gathered = np.empty(int(per_chunk.sum()), dtype=self.values.dtype)
        _gather(self.values, self.bits, self.where, self.use_where, self.skip_nan, *self.form,
                first, last, offsets, gathered)  # fmt: skip
        start = int(self.below[first - 1]) if first > 0 else 0
        local = [rank - start for rank in ranks]
        part = np.partition(gathered, local)
        return tuple(part[r] for r in local)


def _flat(values: np.ndarray, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        # As numpy does: integers are averaged in float64, which holds them exactly up to 2^53.
        values = values.astype(np.float64)
    if values.dtype.kind != "f" or values.dtype.itemsize not in (4, 8):
        raise ValueError(f"values must be integers, float32 or float64; got {values.dtype}")
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("=")).reshape(-1)
    if where is not None:
        where = np.asarray(where)
        if where.size != values.size:
            raise ValueError(f"where has {where.size} elements, the values {values.size}")
        where = np.ascontiguousarray(where, dtype=np.bool_).reshape(-1)
    return values, where


def median(values: np.ndarray, where: np.ndarray | None = None, *, skip_nan: bool = False) -> float:
    """``np.median(values[where])`` (``np.nanmedian`` with ``skip_nan``), the same value bit for bit:
    NaN when a NaN is counted or nothing is; the two middle values of an even count averaged in the
    values' precision. ``values``: an array of any shape (any unit) of floats (32 or 64 bits) or
    integers (compared and averaged as float64, as numpy does)."""
    counted = _Counted(*_flat(values, where), skip_nan)
    n = counted.counted
    if n == 0 or (counted.nans and not skip_nan):
        return float("nan")
    if n % 2 == 1:
        return float(counted.ranks(((n - 1) // 2,))[0])
    low, high = counted.ranks((n // 2 - 1, n // 2))
    return float((low + high) / counted.values.dtype.type(2))


def lower_median(values: np.ndarray, where: np.ndarray | None = None) -> float:
    """The value of rank ``(n - 1) // 2`` (0-based) of the ``n`` values in ``where``: the lower of the
    two middle values for an even count (astroscrappy's median); NaN sorts last; 0.0 for no values."""
    counted = _Counted(*_flat(values, where), False)
    n = counted.counted
    return float(counted.ranks(((n - 1) // 2,))[0]) if n else 0.0
