"""The numba kernel behind :func:`reduction_assets.kernels.combine` (see there for the definitions).

Layout: rows are distributed over threads; each row is cut into tiles of ``TILE`` pixels. A tile's
values are loaded frame by frame into a (frames, TILE) buffer (invalid and masked values become +inf
so they sort last), sorted along the frame axis with a sorting network whose compare-exchanges run
across the tile's pixels (SIMD), and then each pixel's sorted values are reduced by scalar code.
The network sorts the values' bit patterns as signed integers of the same width, turned into keys
whose integer order is the floats' order (``float_keys``): integer min/max vectorise into plain
SIMD min/max and stores, where the float comparison became masked stores (2-2.5x slower). After the
sort the keys are turned back into the same floats, bit for bit. On the sorted values:
sigma clipping on sorted data keeps a contiguous window, so medians are O(1) and the MAD is a merge
of the two sorted half-sequences on either side of the median.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from reduction_assets.kernels.float_keys import float_key
from reduction_assets.kernels.network import BOTH, LOW_ONLY

TILE = 256

MEAN, MEDIAN, SIGMA_CLIP = 0, 1, 2
SCALE_STD, SCALE_MAD, SCALE_MODEL = 0, 1, 2


@nb.njit(cache=True, error_model="numpy", inline="always")
def _median_sorted(buf, p, lo, hi):
    count = hi - lo
    half = lo + count // 2
    if count % 2 == 1:
        return buf[half, p]
    return 0.5 * (buf[half - 1, p] + buf[half, p])


@nb.njit(cache=True, error_model="numpy", inline="always")
def _median_and_error(buf, acc1, acc2, p, n):
    """The median of the sorted buf[0:n, p] and its standard error, from the sums of (v - ref) and
    (v - ref)^2 of the n values (n > 0)."""
    d1 = acc1[p] / n
    variance = acc2[p] / n - d1 * d1
    # Efficiency of the median for normal data: sigma_med = sqrt(pi/2) sigma/sqrt(n).
    error = 1.2533141373155003 * math.sqrt(max(variance, 0.0) / (n - 1.0)) if n > 1 else np.nan
    return _median_sorted(buf, p, 0, n), error


@nb.njit(cache=True, error_model="numpy", inline="always")
def _deviation_rank(buf, p, split, lo, hi, centre, k):
    """Value of rank k (0-based) among |buf[i, p] - centre| for i in [lo, hi), by binary search.

    Left of ``split`` the deviations read leftwards, A[i] = centre - buf[split - 1 - i, p], ascend; right
    of it, B[j] = buf[split + j, p] - centre, ascend too. The k+1 smallest deviations are the first i of A
    and the first k+1-i of B for the one i where the two prefixes interleave.
    """
    n_left = split - lo
    n_right = hi - split
    low_i = max(0, k + 1 - n_right)
    high_i = min(k + 1, n_left)
    while True:
        i = (low_i + high_i) // 2
        j = k + 1 - i
        if i < n_left and j > 0 and buf[split + j - 1, p] - centre > centre - buf[split - 1 - i, p]:
            low_i = i + 1
        elif i > 0 and j < n_right and centre - buf[split - i, p] > buf[split + j, p] - centre:
            high_i = i - 1
        else:
            a = centre - buf[split - i, p] if i > 0 else -np.inf
            b = buf[split + j - 1, p] - centre if j > 0 else -np.inf
            return a if a > b else b


@nb.njit(cache=True, error_model="numpy")
def _mad(buf, p, lo, hi, centre):
    """Median of |buf[i, p] - centre| over the sorted window buf[lo:hi, p], ``centre`` being its median."""
    count = hi - lo
    split = lo + count // 2
    while split > lo and buf[split - 1, p] >= centre:
        split -= 1
    while split < hi and buf[split, p] < centre:
        split += 1
    upper = _deviation_rank(buf, p, split, lo, hi, centre, count // 2)
    if count % 2 == 1:
        return upper
    return 0.5 * (_deviation_rank(buf, p, split, lo, hi, centre, count // 2 - 1) + upper)


@nb.njit(cache=True, error_model="numpy", inline="always")
def _window(buf, p, n, low, high):
    """[first, last) of the sorted buf[0:n, p] inside [low, high] (bounds inclusive)."""
    first = 0
    while first < n and buf[first, p] < low:
        first += 1
    last = n
    while last > first and buf[last - 1, p] > high:
        last -= 1
    return first, last


@nb.njit(cache=True, error_model="numpy", inline="always")
def _load(src, dst, count, t):
    """One frame's row of the tile into the buffer; invalid values become +inf (they sort last)."""
    for p in range(t):
        v = src[p]
        # (v - v) == 0 is False exactly for NaN and +-inf, and vectorises (np.isfinite is a call).
        good = (v - v) == 0.0
        dst[p] = v if good else np.inf
        count[p] += 1 if good else 0


# A twin of _load rather than a flag: a mask test inside the loop stops LLVM vectorising it, which
# made every combine ~40% slower.
@nb.njit(cache=True, error_model="numpy", inline="always")
def _load_masked(src, masked, dst, count, t):
    for p in range(t):
        v = src[p]
        good = ((v - v) == 0.0) & (not masked[p])
        dst[p] = v if good else np.inf
        count[p] += 1 if good else 0


@nb.njit(cache=True, error_model="numpy", inline="always")
def _to_key(row, shift, magnitude, t):
    """Float bit patterns (as signed integers) to their keys, in place, or keys back to floats."""
    for p in range(t):
        row[p] = float_key(row[p], shift, magnitude)


@nb.njit(cache=True, error_model="numpy", inline="always")
def _compare_exchange(keys, i, j, t):
    """keys[i, :t], keys[j, :t] = their elementwise minimum and maximum."""
    for p in range(t):
        a = keys[i, p]
        b = keys[j, p]
        keys[i, p] = a if a < b else b
        keys[j, p] = b if a < b else a


@nb.njit(cache=True, error_model="numpy", inline="always")
def _load_keys(src_bits, dst, count, key_form, t):
    """One frame's row of the tile as sort keys; NaN and +-inf (exponent all ones) become the key of
    +inf, so they sort last."""
    shift = key_form[0]
    magnitude = key_form[1]
    inf = key_form[2]
    for p in range(t):
        v = src_bits[p]
        good = (v & inf) != inf
        dst[p] = float_key(v, shift, magnitude) if good else inf
        count[p] += 1 if good else 0


# A twin rather than a flag, as for _load.
@nb.njit(cache=True, error_model="numpy", inline="always")
def _load_keys_masked(src_bits, masked, dst, count, key_form, t):
    shift = key_form[0]
    magnitude = key_form[1]
    inf = key_form[2]
    for p in range(t):
        v = src_bits[p]
        good = ((v & inf) != inf) & (not masked[p])
        dst[p] = float_key(v, shift, magnitude) if good else inf
        count[p] += 1 if good else 0


@nb.njit(cache=True, error_model="numpy", inline="always")
def _accumulate_valid(values, row_keys, inf, ref, acc1, acc2, t):
    """_accumulate for the values whose key is not the invalid one (before any sorting)."""
    for p in range(t):
        d = values[p] - ref[p]
        d = d if row_keys[p] != inf else 0.0
        acc1[p] += d
        acc2[p] += d * d


@nb.njit(cache=True, error_model="numpy", inline="always")
def _select_step(keys, i, j, kind, t):
    """One step of a pruned network: both outputs, or only the minimum or only the maximum."""
    if kind == BOTH:
        _compare_exchange(keys, i, j, t)
    elif kind == LOW_ONLY:
        for p in range(t):
            a = keys[i, p]
            b = keys[j, p]
            keys[i, p] = a if a < b else b
    else:
        for p in range(t):
            a = keys[i, p]
            b = keys[j, p]
            keys[j, p] = b if a < b else a


@nb.njit(cache=True, error_model="numpy", inline="always")
def _accumulate(values, ref, acc1, acc2, t):
    """Add (v - ref) and (v - ref)^2 of the valid values of one frame to the running sums."""
    for p in range(t):
        v = values[p]
        d = v - ref[p]
        d = d if v != np.inf else 0.0
        acc1[p] += d
        acc2[p] += d * d


@nb.njit(cache=True, error_model="numpy", inline="always")
def _move_window(buf, p, ref, lo, hi, new_lo, new_hi, w1, w2):
    """Window sums of (v - ref) after moving [lo, hi) to [new_lo, new_hi) (either direction)."""
    for i in range(lo, new_lo):
        d = buf[i, p] - ref
        w1 -= d
        w2 -= d * d
    for i in range(new_lo, lo):
        d = buf[i, p] - ref
        w1 += d
        w2 += d * d
    for i in range(new_hi, hi):
        d = buf[i, p] - ref
        w1 -= d
        w2 -= d * d
    for i in range(hi, new_hi):
        d = buf[i, p] - ref
        w1 += d
        w2 += d * d
    return w1, w2


@nb.njit(cache=True, error_model="numpy", inline="always")
def _clip(
    buf, p, n, ref, w1, w2, centre_median, scale_mode, mad_factor, noise, sigma_low, sigma_high, max_iters
):
    """Sigma-clip one pixel whose sorted valid values are buf[0:n, p].

    ``w1``, ``w2`` are the sums of (v - ref) and (v - ref)^2 over all n values; the window of
    survivors is contiguous in sorted order and its sums are updated as its edges move, so each
    iteration costs O(1) plus the values it rejects. Returns the last bounds, the final window
    [first, last) of all values inside them, and that window's sums.
    """
    lo, hi = 0, n
    low, high = -np.inf, np.inf
    iteration = 0
    median = 0.0
    mean = 0.0
    std = 0.0
    while True:
        count = hi - lo
        if scale_mode == SCALE_MODEL and count < 3:
            # Two values cannot tell which of them is the outlier: stop, keeping the last bounds
            # (none when there were never three).
            break
        if centre_median or scale_mode == SCALE_MAD:
            median = _median_sorted(buf, p, lo, hi)
        if scale_mode == SCALE_STD:
            d1 = w1 / count
            variance = w2 / count - d1 * d1
            std = math.sqrt(variance) if variance > 0.0 else 0.0
        if not centre_median:
            # Summed directly: a zero scale keeps only values equal to the centre, so the centre
            # must be exactly the mean astropy computes, not one recovered from running sums.
            total = 0.0
            for i in range(lo, hi):
                total += buf[i, p]
            mean = total / count
        centre = median if centre_median else mean
        if scale_mode == SCALE_MODEL and centre_median and count % 2 == 0:
            # The lower of the two middle values: hits are positive, and two among four frames must
            # not pull the centre between them (then every value would lie outside the bounds).
            centre = buf[lo + count // 2 - 1, p]
        if scale_mode == SCALE_MAD:
            std = _mad(buf, p, lo, hi, median) * mad_factor
        elif scale_mode == SCALE_MODEL:
            # The known noise of the frames at this level: read noise, and Poisson noise above an
            # offset (the pedestal of darks that include the bias).
            excess = centre - noise[2]
            std = math.sqrt(noise[0] + noise[1] * (excess if excess > 0.0 else 0.0))
        low = centre - sigma_low * std
        high = centre + sigma_high * std
        new_lo, new_hi = lo, hi
        while new_lo < new_hi and buf[new_lo, p] < low:
            new_lo += 1
        while new_hi > new_lo and buf[new_hi - 1, p] > high:
            new_hi -= 1
        if (new_lo == lo and new_hi == hi) or new_hi == new_lo:
            break
        w1, w2 = _move_window(buf, p, ref, lo, hi, new_lo, new_hi, w1, w2)
        lo, hi = new_lo, new_hi
        iteration += 1
        if max_iters > 0 and iteration >= max_iters:
            break
    # astropy masks every value against the last bounds, so earlier rejects inside them return.
    first, last = _window(buf, p, n, low, high)
    w1, w2 = _move_window(buf, p, ref, lo, hi, first, last, w1, w2)
    return low, high, first, last, w1, w2


@nb.njit(parallel=True, cache=True, error_model="numpy")
def combine_kernel(
    stack,
    mask,
    use_mask,
    weights,
    use_weights,
    method,
    centre_median,
    scale_mode,
    mad_factor,
    noise,
    sigma_low,
    sigma_high,
    max_iters,
    net_i,
    net_j,
    med_i,
    med_j,
    med_kind,
    bits,
    key_form,
    out,
    n_used,
    error,
):
    """``bits`` is the stack viewed as signed integers of its float width; ``key_form`` holds, as such
    integers, the sign shift, the magnitude mask and the bits of +inf (the exponent mask).
    ``net_i``, ``net_j`` sort the frames; ``med_*`` is the same network pruned to the middle ranks."""
    n_frames, height, width = stack.shape
    n_steps = net_i.shape[0]
    sort = method != MEAN
    shift = key_form[0]
    magnitude = key_form[1]
    for row in nb.prange(height):
        keys = np.empty((n_frames, TILE), dtype=key_form.dtype)
        buf = keys.view(stack.dtype)
        ref = np.empty(TILE, dtype=np.float64)
        acc1 = np.empty(TILE, dtype=np.float64)
        acc2 = np.empty(TILE, dtype=np.float64)
        count = np.empty(TILE, dtype=np.int32)
        for x0 in range(0, width, TILE):
            t = min(TILE, width - x0)
            for p in range(t):
                count[p] = 0
            pruned = False
            if sort:
                if method == MEDIAN:
                    # The median's error needs the sums of all values, which the pruned network
                    # does not keep: they are taken while loading, about the first frame's value.
                    for p in range(t):
                        first = stack[0, row, x0 + p]
                        ref[p] = first if (first - first) == 0.0 else 0.0
                        acc1[p] = 0.0
                        acc2[p] = 0.0
                for k in range(n_frames):
                    src = stack[k, row, x0 : x0 + t]
                    src_bits = bits[k, row, x0 : x0 + t]
                    if use_mask:
                        _load_keys_masked(src_bits, mask[k, row, x0 : x0 + t], keys[k], count, key_form, t)
                    else:
                        _load_keys(src_bits, keys[k], count, key_form, t)
                    if method == MEDIAN:
                        _accumulate_valid(src, keys[k], key_form[2], ref, acc1, acc2, t)
                if method == MEDIAN:
                    pruned = True
                    for p in range(t):
                        pruned &= count[p] == n_frames
                if pruned:
                    # Every value valid: only the middle ranks are needed.
                    for step in range(med_i.shape[0]):
                        _select_step(keys, med_i[step], med_j[step], med_kind[step], t)
                    _to_key(keys[(n_frames - 1) // 2], shift, magnitude, t)
                    if n_frames % 2 == 0:
                        _to_key(keys[n_frames // 2], shift, magnitude, t)
                else:
                    for step in range(n_steps):
                        _compare_exchange(keys, net_i[step], net_j[step], t)
                    for k in range(n_frames):
                        _to_key(keys[k], shift, magnitude, t)
            else:
                for k in range(n_frames):
                    if use_mask:
                        _load_masked(stack[k, row, x0 : x0 + t], mask[k, row, x0 : x0 + t], buf[k], count, t)
                    else:
                        _load(stack[k, row, x0 : x0 + t], buf[k], count, t)
            if pruned:
                # Every value valid: the tile's pixels alike, in a loop without branches.
                for p in range(t):
                    out[row, x0 + p], error[row, x0 + p] = _median_and_error(buf, acc1, acc2, p, n_frames)
                    n_used[row, x0 + p] = n_frames
                continue
            if method != MEDIAN:
                # A reference value near the data keeps the prefix sums free of cancellation.
                for p in range(t):
                    n = count[p]
                    if n == 0:
                        ref[p] = 0.0
                    elif sort:
                        ref[p] = buf[(n - 1) // 2, p]
                    else:
                        k = 0
                        while not np.isfinite(buf[k, p]):
                            k += 1
                        ref[p] = buf[k, p]
                for p in range(t):
                    acc1[p] = 0.0
                    acc2[p] = 0.0
                for k in range(n_frames):
                    _accumulate(buf[k], ref, acc1, acc2, t)
            for p in range(t):
                n = count[p]
                x = x0 + p
                if n == 0:
                    out[row, x] = np.nan
                    n_used[row, x] = 0
                    error[row, x] = np.nan
                    continue
                w1 = acc1[p]
                w2 = acc2[p]
                if method == MEDIAN:
                    out[row, x], error[row, x] = _median_and_error(buf, acc1, acc2, p, n)
                    n_used[row, x] = n
                    continue
                low, high = -np.inf, np.inf
                used = n
                if method == SIGMA_CLIP:
                    low, high, first, last, w1, w2 = _clip(
                        buf,
                        p,
                        n,
                        ref[p],
                        w1,
                        w2,
                        centre_median,
                        scale_mode,
                        mad_factor,
                        noise,
                        sigma_low,
                        sigma_high,
                        max_iters,
                    )
                    used = last - first
                n_used[row, x] = used
                if used == 0:
                    out[row, x] = np.nan
                    error[row, x] = np.nan
                    continue
                if not use_weights:
                    d1 = w1 / used
                    variance = w2 / used - d1 * d1
                    out[row, x] = ref[p] + d1
                    error[row, x] = math.sqrt(max(variance, 0.0) / (used - 1.0)) if used > 1 else np.nan
                    continue
                # Weighted mean of the survivors, in the frames' own order (weights follow frames).
                sw = 0.0
                swx = 0.0
                sww = 0.0
                for k in range(n_frames):
                    value = stack[k, row, x]
                    if not np.isfinite(value) or (use_mask and mask[k, row, x]):
                        continue
                    if value < low or value > high:
                        continue
                    w = weights[k]
                    sw += w
                    swx += w * value
                    sww += w * w
                mean = swx / sw
                out[row, x] = mean
                if used > 1:
                    swd = 0.0
                    for k in range(n_frames):
                        value = stack[k, row, x]
                        if not np.isfinite(value) or (use_mask and mask[k, row, x]):
                            continue
                        if value < low or value > high:
                            continue
                        d = value - mean
                        swd += weights[k] * d * d
                    variance = swd / sw * used / (used - 1.0)
                    error[row, x] = math.sqrt(variance * sww) / sw
                else:
                    error[row, x] = np.nan
