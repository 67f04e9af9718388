"""Floats as integers that compare like them: what the combine kernel sorts and ``select`` counts.

A float's bit pattern read as a signed integer of the same width compares like the float for
non-negative values and in reverse for negative ones; flipping a negative value's magnitude bits
puts them in order (-0.0 becomes the key just below +0.0). The mapping is its own inverse, so
sorted keys turn back into the same floats, bit for bit. Integer min/max vectorise into plain SIMD
instructions, where float comparisons written as selects did not.
"""

from __future__ import annotations

import numba as nb
import numpy as np


def key_form(dtype: np.dtype) -> np.ndarray:
    """For float32 or float64: (sign shift, magnitude mask, bits of +inf, i.e. the exponent mask)
    as an array of the signed integers of the same width, the keys' type."""
    dtype = np.dtype(dtype)
    key_type = np.int32 if dtype.itemsize == 4 else np.int64
    width = 8 * dtype.itemsize
    infinity = int(np.array(np.inf, dtype=dtype).view(key_type))
    return np.array([width - 1, (1 << (width - 1)) - 1, infinity], dtype=key_type)


@nb.njit(cache=True, inline="always")
def float_key(v, shift, magnitude):
    """The key of a float's bit pattern ``v`` (or the bit pattern of key ``v``: its own inverse)."""
    return v ^ ((v >> shift) & magnitude)
