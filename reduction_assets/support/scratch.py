"""Scratch planes on disk: large intermediate images (members resampled for a stack) that must not
all sit in memory at once. They are written and read with plain file I/O, not memory-mapped, so the
pages they pass through are never counted against the process; the folder is removed on exit."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import numpy as np


class DiskPlanes:
    """``n`` planes of ``shape`` (rows, columns) and ``dtype`` in one file: written a plane at a
    time, read back as (n, rows, columns) blocks of rows."""

    def __init__(self, path: Path, n: int, shape: tuple[int, int], dtype: np.dtype):
        self.path, self.n, self.shape, self.dtype = path, n, tuple(shape), np.dtype(dtype)
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by close()
        self._file.truncate(n * shape[0] * shape[1] * self.dtype.itemsize)
        self._block: np.ndarray | None = None

    def write(self, k: int, plane: np.ndarray) -> None:
        plane = np.ascontiguousarray(plane, dtype=self.dtype)
        if plane.shape != self.shape:
            raise ValueError(f"plane shape {plane.shape} differs from {self.shape}")
        self._file.seek(k * plane.nbytes)
        self._file.write(plane.data)

    def rows(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first:stop`` of every plane, (n, stop - first, columns). The array is reused by the
        next call (no fresh pages to fault in for every block)."""
        height, width = self.shape
        count = stop - first
        if self._block is None or self._block.shape[1] < count:
            self._block = np.empty((self.n, count, width), dtype=self.dtype)
        block = self._block[:, :count]
        row_bytes = width * self.dtype.itemsize
        for k in range(self.n):
            self._file.seek((k * height + first) * row_bytes)
            self._file.readinto(memoryview(block[k]).cast("B"))
        return block

    def close(self) -> None:
        self._file.close()


Planes = Callable[[int, tuple[int, int], np.dtype], DiskPlanes]


@contextmanager
def scratch_planes(folder: Path | None = None) -> Iterator[Planes]:
    """Yield ``planes(n, shape, dtype)``, which makes a new :class:`DiskPlanes` in a temporary folder
    under ``folder`` (the system's temporary folder when None); all go on exit."""
    with tempfile.TemporaryDirectory(prefix="scratch_", dir=folder) as name:
        numbers = count()
        made: list[DiskPlanes] = []

        def planes(n: int, shape: tuple[int, int], dtype: np.dtype) -> DiskPlanes:
            made.append(DiskPlanes(Path(name) / f"{next(numbers)}.planes", n, shape, dtype))
            return made[-1]

        try:
            yield planes
        finally:
            for plane in made:
                plane.close()
