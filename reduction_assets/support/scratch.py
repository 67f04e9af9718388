"""Scratch planes on disk: large intermediate images (members resampled for a stack) that must not
all sit in memory at once. They are written and read with plain file I/O, not memory-mapped, so the
pages they pass through are never counted against the process; the folder is removed on exit.

A step's scratch lives in ``scratch/<run>/<step>/``, held by an OS file lock while the step works
(released however its process ends, ``kill -9`` included). A folder whose lock nobody holds is left
over from a step that was interrupted: the next step and ``verify --repair`` remove it."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import filelock
import numpy as np

from reduction_assets.support.home import make_dirs

HELD = ".held"  # the lock file of a step's scratch folder
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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


@contextmanager
def step_scratch(root: Path, run_id: str, step: str) -> Iterator[Path]:
    """``root/<run_id>/<step>/``, held by this process while the step works and removed (with the
    run's folder when it is empty) when it ends."""
    folder = make_dirs(Path(root) / _SAFE.sub("_", run_id) / _SAFE.sub("_", step))
    held = filelock.FileLock(str(folder / HELD))
    held.acquire()
    try:
        yield folder
    finally:
        held.release()
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another step of the run still works there
            folder.parent.rmdir()


@dataclass(frozen=True)
class Leftover:
    """Scratch that no living step holds: its path (relative to the scratch root) and size."""

    name: str
    size_bytes: int


def leftover_scratch(root: Path) -> list[Leftover]:
    """Scratch under ``root`` that no step holds: step folders whose lock is free, and anything that
    is not a step folder (the temporary folders of releases before step folders)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        steps = (
            [step for step in sorted(entry.iterdir()) if (step / HELD).is_file()] if entry.is_dir() else []
        )
        if steps and len(steps) == len(list(entry.iterdir())):
            found += [_leftover(root, step) for step in steps if not _held(step)]
        else:
            found.append(_leftover(root, entry))
    return found


def remove_leftover_scratch(root: Path) -> list[Leftover]:
    """Remove the scratch no step holds (and run folders left empty); what was removed."""
    removed = leftover_scratch(root)
    for leftover in removed:
        path = Path(root) / leftover.name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if path.parent != Path(root):
            with contextlib.suppress(OSError):  # another step of that run is still working
                path.parent.rmdir()
    return removed


def _held(step: Path) -> bool:
    """Whether a living process holds the step folder's lock (trying it does not wait)."""
    probe = filelock.FileLock(str(step / HELD))
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return True
    probe.release()
    return False


def _leftover(root: Path, path: Path) -> Leftover:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return Leftover(str(path.relative_to(root)), sum(p.stat().st_size for p in files))
