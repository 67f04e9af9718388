"""Memory-bounded combining: frames are supplied in blocks of rows, so peak memory stays within a
budget whatever the number of frames (one block of rows of every frame plus the full-size outputs).

Where the rows come from is the caller's business (``reduction_assets.fits.reading`` reads them
from FITS files, memory-mapped and unmapped block by block).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reduction_assets.kernels.combine import CombineResult, combine

# Beside the (N, rows, W) block itself, combine() may copy it (scales) and the caller's reader holds
# a few rows of scratch: budget twice the block.
_BLOCK_OVERHEAD = 2.0


def rows_per_block(n_frames: int, shape: tuple[int, int], itemsize: int, memory_budget: int) -> int:
    """Rows per block so that the blocks and the outputs fit in ``memory_budget`` bytes."""
    height, width = shape
    outputs = height * width * (itemsize * 2 + 4)  # data, error, n_used
    available = memory_budget - outputs
    per_row = n_frames * width * itemsize * _BLOCK_OVERHEAD
    if available < per_row:
        raise MemoryError(
            f"a memory budget of {memory_budget / 2**20:.1f} MiB cannot hold the outputs "
            f"({outputs / 2**20:.1f} MiB) and one row of {n_frames} frames"
        )
    return int(min(height, max(1, available // per_row)))


def combine_blocks(
    read_block: Callable[[int, int, int], np.ndarray],
    n_frames: int,
    shape: tuple[int, int],
    method: str,
    *,
    memory_budget: int = 1 << 30,
    dtype=np.float32,
    read_mask: Callable[[int, int, int], np.ndarray] | None = None,
    **combine_options,
) -> CombineResult:
    """Combine ``n_frames`` frames of ``shape`` (H, W) supplied block by block.

    ``read_block(k, r0, r1)`` returns rows ``r0:r1`` of frame ``k`` as an (r1 - r0, W) array (already
    calibrated, in the unit to combine); ``read_mask`` likewise returns booleans (True = exclude).
    ``combine_options`` are those of :func:`reduction_assets.kernels.combine`.
    """
    height, width = shape
    itemsize = np.dtype(dtype).itemsize
    rows = rows_per_block(n_frames, shape, itemsize, memory_budget)
    data = np.empty(shape, dtype=dtype)
    error = np.empty(shape, dtype=dtype)
    n_used = np.empty(shape, dtype=np.int32)
    block = np.empty((n_frames, rows, width), dtype=dtype)
    mask_block = np.empty((n_frames, rows, width), dtype=np.bool_) if read_mask else None
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        view = block[:, : r1 - r0]
        for k in range(n_frames):
            part = read_block(k, r0, r1)
            if part.shape != (r1 - r0, width):
                raise ValueError(
                    f"frame {k} returned rows of shape {part.shape}, expected {(r1 - r0, width)}"
                )
            view[k] = part
        mask_view = None
        if mask_block is not None:
            mask_view = mask_block[:, : r1 - r0]
            for k in range(n_frames):
                mask_view[k] = read_mask(k, r0, r1)
        result = combine(np.ascontiguousarray(view), method, mask=mask_view, **combine_options)
        data[r0:r1] = result.data
        error[r0:r1] = result.error
        n_used[r0:r1] = result.n_used
    return CombineResult(data=data, n_used=n_used, error=error)
