"""Exact medians of large images on every core: numpy's values, without numpy's single-threaded sort.

``np.median`` of a 2048x2048 frame partitions a copy of it on one core (~25 ms, ~40 ms for a masked
selection, which copies first); a science frame takes six such medians. Here the values' bit
patterns become integer keys ordered like the floats (``float_keys``). A sample of 65536 values
brackets the middle ranks (Floyd and Rivest's selection): one parallel pass counts the values below
and above the bracket and gathers those inside it (about 2 % of a sky image), which numpy then
partitions. Where the wanted ranks fall outside the bracket (a sample unlike the whole, many equal
values), or for small arrays, two passes do it instead: one counts the keys by their top 16 bits,
which tells the bucket holding the wanted rank, the other gathers that bucket's values. Either way
the result is the same value as numpy's, bit for bit, including its arithmetic for the mean of the
two middle values of an even count.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np

from reduction_assets.kernels.float_keys import float_key, key_form

BUCKETS = 1 << 16
SAMPLE = 1 << 16  # values sampled to bracket the middle ranks
SAMPLED_SIZE = 4 * SAMPLE  # arrays of at least this many values (512² and up) are sampled
BRACKET_SIGMAS = 6.0  # the bracket's half width: the sample median's rank error, this many times


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


@nb.njit(parallel=True, cache=True)
def _bracket(values, bits, where, use_where, skip_nan, shift, magnitude, infinity, low, high, inside):
    """One pass, a chunk of values per row of ``inside``: how many counted values have keys below
    ``low``, within [low, high] and above ``high`` (a NaN, counted, sorts last), and how many of
    them are NaN; the values within are copied into the chunk's row of ``inside`` while it has
    room (its last element is scratch; the count may exceed the room). ``low`` and ``high`` are
    keys of numbers; ``infinity`` the key of +inf (NaNs' keys lie beyond +-infinity)."""
    n = values.size
    chunks = inside.shape[0]
    room = inside.shape[1] - 1
    tallies = np.zeros((chunks, 4), dtype=np.int64)
    negative_infinity = -infinity - 1  # the key of -inf
    for c in nb.prange(chunks):
        row = inside[c]
        start, stop = _span(n, chunks, c)
        below = 0
        kept = 0
        above = 0
        low_nans = 0
        high_nans = 0
        # Integer comparisons of the keys and no branch on the values (which way a sky value
        # falls is a coin toss): every value is stored, at the next free place only if inside.
        for i in range(start, stop):
            key = float_key(bits[i], shift, magnitude)
            counted = where[i] if use_where else True
            lower = counted & (key < low)
            higher = counted & (key > high)
            below += lower
            above += higher
            low_nans += counted & (key < negative_infinity)
            high_nans += counted & (key > infinity)
            row[kept if kept < room else room] = values[i]
            kept += counted & (not (lower | higher))
        nans = 0 if skip_nan else low_nans + high_nans
        tallies[c, 0] = below - low_nans
        tallies[c, 1] = kept
        tallies[c, 2] = above - high_nans + nans
        tallies[c, 3] = nans
    return tallies


@functools.cache
def _sample_indices(size: int) -> np.ndarray:
    """SAMPLE indices drawn at random among ``size`` (the same ones every time): a stride would
    meet an image's columns in step with it (every 64th value of 2048-wide rows is 32 columns)."""
    return np.sort(np.random.default_rng(size).integers(0, size, SAMPLE))


def _sampled(values: np.ndarray, where: np.ndarray | None, skip_nan: bool, ranks_of) -> tuple | None:
    """``(counted, nans, values of ranks_of(counted))`` from a bracket about the middle ranks found
    on a sample, or None where the sample does not do (then the histogram's two passes do)."""
    if values.size < SAMPLED_SIZE:
        return None
    form = key_form(values.dtype)
    shift, magnitude = form[0], form[1]
    picks = _sample_indices(values.size)
    sample = values[picks]
    if where is not None:
        sample = sample[where[picks]]
    sample = sample[~np.isnan(sample)]
    m = sample.size
    if m < SAMPLE // 4:
        return None
    keys = sample.view(form.dtype)
    keys = keys ^ ((keys >> shift) & magnitude)
    half_width = BRACKET_SIGMAS * np.sqrt(0.25 * m) + 2.0
    first, last = int(max(0, m / 2 - half_width)), int(min(m - 1, m / 2 + half_width))
    low, high = np.partition(keys, (first, last))[[first, last]]
    chunks = max(1, min(nb.get_num_threads(), values.size // 4096))
    # Room for four times the share of values the sample puts in the bracket.
    capacity = int(4 * (last - first + 1) / m * values.size / chunks) + 1024
    inside = np.empty((chunks, capacity + 1), dtype=values.dtype)
    tallies = _bracket(values, values.view(form.dtype), where if where is not None else np.zeros(1, np.bool_),
                       where is not None, skip_nan, shift, magnitude, form[2], low, high, inside)  # fmt: skip
    below, kept, _, nans = (int(total) for total in tallies.sum(axis=0))
    counted = int(tallies[:, :3].sum())
    ranks = ranks_of(counted)
    if tallies[:, 1].max() > capacity or not all(below <= rank < below + kept for rank in ranks):
        return None
    gathered = np.concatenate([inside[c, :count] for c, count in enumerate(tallies[:, 1])])
    local = [rank - below for rank in ranks]
    part = np.partition(gathered, local)
    return counted, nans, tuple(part[r] for r in local)


def _middle(n: int) -> tuple[int, ...]:
    """The ranks of the median of n values: the middle one, or the two middle ones."""
    return ((n - 1) // 2,) if n % 2 == 1 else (n // 2 - 1, n // 2)


def _lower_middle(n: int) -> tuple[int, ...]:
    return ((n - 1) // 2,)


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
    values, where = _flat(values, where)
    sampled = _sampled(values, where, skip_nan, _middle)
    if sampled is not None:
        n, nans, middle = sampled
    else:
        counted = _Counted(values, where, skip_nan)
        n, nans = counted.counted, counted.nans
        middle = counted.ranks(_middle(n)) if n and not nans else ()
    if n == 0 or nans:
        return float("nan")
    if n % 2 == 1:
        return float(middle[0])
    return float((middle[0] + middle[1]) / values.dtype.type(2))


def lower_median(values: np.ndarray, where: np.ndarray | None = None) -> float:
    """The value of rank ``(n - 1) // 2`` (0-based) of the ``n`` values in ``where``: the lower of the
    two middle values for an even count (astroscrappy's median); NaN sorts last; 0.0 for no values."""
    values, where = _flat(values, where)
    sampled = _sampled(values, where, False, _lower_middle)
    if sampled is not None:
        return float(sampled[2][0])
    counted = _Counted(values, where, False)
    n = counted.counted
    return float(counted.ranks(_lower_middle(n))[0]) if n else 0.0
