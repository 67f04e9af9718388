"""Stacking from files in row blocks: same result as in memory, bounded memory, clear errors."""

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from reduction_assets.fits.reading import combine_files, read_rows
from reduction_assets.kernels import combine, combine_blocks
from reduction_assets.kernels.streaming import rows_per_block


def write_frames(folder, n, shape=(64, 48), seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    frames = rng.normal(500, 10, (n, *shape)).astype(dtype)
    frames[rng.random(frames.shape) < 0.02] += 4000
    paths = []
    for k, frame in enumerate(frames):
        path = folder / f"frame{k:02d}.fits"
        fits.PrimaryHDU(frame).writeto(path)
        paths.append(path)
    return frames, paths


def test_blocks_give_the_same_result_as_one_stack(tmp_path):
    frames, paths = write_frames(tmp_path, 9)
    streamed = combine_files(paths, "sigma_clip", memory_budget=64 * 1024)  # a few rows per block
    whole = combine(frames, "sigma_clip")
    np.testing.assert_array_equal(streamed.data, whole.data)
    np.testing.assert_array_equal(streamed.n_used, whole.n_used)


def test_scaled_16_bit_files_are_read_exactly(tmp_path):
    raw = np.random.default_rng(1).integers(0, 65535, (10, 12), dtype=np.uint16)
    fits.PrimaryHDU(raw).writeto(tmp_path / "raw.fits")  # stored as int16 + BZERO 32768
    np.testing.assert_array_equal(read_rows(tmp_path / "raw.fits", 2, 7), raw[2:7].astype(np.float32))


def test_peak_memory_stays_within_the_budget_whatever_the_number_of_frames(tmp_path):
    shape = (256, 256)
    _, paths = write_frames(tmp_path, 40, shape=shape)
    budget = 2 * 2**20  # 2 MiB, while the 40 frames hold 10 MiB
    combine_files(paths[:2], "sigma_clip", memory_budget=budget)  # compile outside the measurement
    tracemalloc.start()
    combine_files(paths, "sigma_clip", memory_budget=budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < budget * 1.25, f"peak {peak / 2**20:.2f} MiB"


def test_frames_of_mismatched_shape_are_refused_by_name(tmp_path):
    _, paths = write_frames(tmp_path, 3)
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(tmp_path / "odd.fits")
    with pytest.raises(ValueError, match=r"odd\.fits has shape"):
        combine_files(paths + [tmp_path / "odd.fits"], "mean")


def test_a_budget_too_small_for_one_row_is_refused():
    with pytest.raises(MemoryError, match="cannot hold"):
        rows_per_block(50, (2048, 2048), 4, 2**20)


def test_a_reader_returning_the_wrong_rows_is_refused():
    with pytest.raises(ValueError, match="expected"):
        combine_blocks(lambda k, r0, r1: np.zeros((1, 5), np.float32), 2, (4, 5), "mean")
