"""A bounded pool of worker processes: a partition's science frames reduced side by side, and a
stack's members resampled side by side.

Processes, not threads: sep (source extraction) holds the GIL. The pool's size comes from the cores
this process may use and the memory budget over what one frame needs at its peak; one worker (or a
process that may not have children, such as a Celery worker's) means the serial path in this
process. Workers start from a fork server (the numba threading layer in use, OpenMP, is not
fork-safe), and each gets an equal share of the cores for its numba threads.

Masters are written once per pool to ``.npy`` files that every worker maps read-only and keeps, so a
task carries one raw frame, not three masters. Results come back in submission order, whatever
order the workers finish in, and are the same bit for bit as the serial path's: the same function
runs on the same arrays.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

import numpy as np

from reduction_assets.reduction.masters import Master
from reduction_assets.reduction.science import ReducedScience, ScienceFrame, reduce_science_frame

LOGGER = logging.getLogger(__name__)

Item = TypeVar("Item")
Job = TypeVar("Job")
Result = TypeVar("Result")

# Peak bytes per image pixel of reducing one science frame (raw, SCI, ERR, variance, DQ, the
# L.A.Cosmic planes, sep's float64 copies), measured at 2048x2048 with margin.
BYTES_PER_PIXEL = 200
# Peak bytes of resampling one member in a worker: per member pixel, its SCI, ERR and DQ as they
# arrive and the variance made from ERR; per grid pixel, the resampled planes and their pickled copy
# on the way back. Measured: 175 MiB for 2048x2048 onto 2100x2100; this gives 197 MiB.
MEMBER_BYTES_PER_PIXEL = 24
GRID_BYTES_PER_PIXEL = 24
# Below this many pixels of work in all, starting workers (about a second each, loading the
# compiled kernels) costs more than it saves: the frames are reduced here.
POOL_MIN_PIXELS = 8_000_000
# The modules a worker needs, imported once in the fork server rather than in every worker.
_PRELOAD = ["reduction_assets.support.parallel"]


def available_cores() -> int:
    """The CPUs this process may use: its affinity mask (not the machine's count), and no more than
    a cgroup v2 CPU quota (a container's limit) allows."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(Path("/sys/fs/cgroup/cpu.max"))
    return max(1, min(cores, quota)) if quota else cores


def _cgroup_cpu_quota(path: Path) -> int | None:
    """Whole CPUs of a cgroup v2 ``cpu.max`` ("quota period", or "max" for none); None without one."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def worker_count(tasks: int, bytes_per_task: int, memory_budget: int, cores: int | None = None) -> int:
    """Workers for ``tasks`` independent tasks of ``bytes_per_task`` peak memory each: no more than
    the cores, the tasks, or what fits in ``memory_budget`` bytes; at least one."""
    cores = available_cores() if cores is None else cores
    fits = memory_budget // max(bytes_per_task, 1)
    return int(max(1, min(cores, tasks, fits)))


def frame_bytes(shape: tuple[int, int]) -> int:
    """Peak memory (bytes) of reducing one science frame of ``shape`` pixels."""
    return int(shape[0]) * int(shape[1]) * BYTES_PER_PIXEL


def frame_workers(shapes: list[tuple[int, int]], memory_budget: int, cores: int | None = None) -> int:
    """Workers for reducing frames of these shapes (rows, columns) within ``memory_budget`` bytes:
    one when there is too little work to pay for starting processes."""
    if sum(rows * columns for rows, columns in shapes) < POOL_MIN_PIXELS:
        return 1
    return worker_count(len(shapes), max(frame_bytes(shape) for shape in shapes), memory_budget, cores)


def resample_workers(
    requested: int,
    member_shapes: list[tuple[int, int]],
    grid_shape: tuple[int, int],
    memory_budget: int,
    cores: int | None = None,
) -> int:
    """Workers for resampling members of these shapes onto a grid of ``grid_shape`` (rows, columns):
    ``requested``, but no more than the cores, the members, or what fits in ``memory_budget`` bytes.

    Not sized from the cores by default: the resampling kernel already runs on every core through
    numba threads, and on 2 cores a pool was slower (the members travel to the workers and back).
    """
    if requested <= 1:
        return 1
    largest = max(rows * columns for rows, columns in member_shapes)
    grid_pixels = int(grid_shape[0]) * int(grid_shape[1])
    bytes_per_task = MEMBER_BYTES_PER_PIXEL * largest + GRID_BYTES_PER_PIXEL * grid_pixels
    return min(requested, worker_count(len(member_shapes), bytes_per_task, memory_budget, cores))


@dataclasses.dataclass(frozen=True)
class MasterOnDisk:
    """A master written to ``folder`` as data.npy, error.npy and dq.npy."""

    folder: str
    exptime: float


_loaded: dict[str, Master] = {}  # per worker process: the masters it has mapped


def load_master(master: Master | MasterOnDisk) -> Master:
    """The master itself, or the one on disk, mapped read-only once per process."""
    if isinstance(master, Master):
        return master
    if master.folder not in _loaded:
        folder = Path(master.folder)
        _loaded[master.folder] = Master(
            *(np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("data", "error", "dq")),
            exptime=master.exptime,
        )
    return _loaded[master.folder]


def reduce_science(frame: ScienceFrame) -> ReducedScience:
    """:func:`reduce_science_frame` of a frame whose masters may be on disk (the pool's task)."""
    masters = {kind: load_master(master) for kind, master in frame.masters.items()}
    return reduce_science_frame(dataclasses.replace(frame, masters=masters))


def _start_worker(numba_threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(numba_threads, numba.config.NUMBA_NUM_THREADS)))


class FramePool:
    """``workers`` processes (none when 1: the work runs here). A context manager; the masters it
    shares and the processes are gone when it exits."""

    def __init__(self, workers: int, log: logging.Logger | None = None):
        self.log = log or LOGGER
        self.workers = max(1, int(workers))
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._shared: dict[object, MasterOnDisk] = {}

    def __enter__(self) -> FramePool:
        if self.workers > 1:
            if multiprocessing.current_process().daemon:
                self.log.info("frames reduced one at a time: this process may not start workers")
                self.workers = 1
            else:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(_PRELOAD)
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers,
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(max(1, available_cores() // self.workers),),
                )
                self._folder = tempfile.TemporaryDirectory(prefix="reduction-masters-")
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._folder is not None:
            self._folder.cleanup()

    def share(self, key: object, master: Master) -> Master | MasterOnDisk:
        """What a task should carry for ``master`` (identified by ``key``): the master itself when
        the work runs here, else its copy on disk, written the first time it is shared."""
        if self._executor is None or self._folder is None:
            return master
        if key not in self._shared:
            folder = Path(self._folder.name) / str(len(self._shared))
            folder.mkdir()
            for name in ("data", "error", "dq"):
                np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(master, name)))
            self._shared[key] = MasterOnDisk(str(folder), float(master.exptime))
        return self._shared[key]

    def map_in_order(
        self,
        compute: Callable[[Job], Result],
        items: Iterable[Item],
        prepare: Callable[[Item], Job],
    ) -> Iterator[tuple[Item, Result | Exception]]:
        """``(item, compute(prepare(item)))`` for every item, in the items' order; an exception
        raised by either is yielded in place of the result. ``prepare`` runs here, lazily (at most
        two tasks per worker are in flight, so memory stays bounded); ``compute`` runs in a worker.
        Should a worker die (killed for memory, say), the remaining items are computed here."""
        if self._executor is None:
            for item in items:
                yield item, _attempt(lambda item=item: compute(prepare(item)))
            return
        pending: deque = deque()
        source = iter(items)
        broken = False
        while True:
            while not broken and len(pending) < 2 * self.workers:
                item = next(source, _END)
                if item is _END:
                    break
                job = _attempt(lambda item=item: prepare(item))
                if isinstance(job, Exception):
                    pending.append((item, None, job))
                    continue
                try:
                    pending.append((item, job, self._executor.submit(compute, job)))
                except BrokenProcessPool:
                    broken = True
                    pending.append((item, job, None))
            if not pending:
                if broken:
                    for item in source:
                        yield item, _attempt(lambda item=item: compute(prepare(item)))
                return
            item, job, future = pending.popleft()
            if isinstance(future, Exception):
                yield item, future
                continue
            if future is not None:
                try:
                    yield item, future.result()
                    continue
                except BrokenProcessPool:
                    if not broken:
                        self.log.warning("a frame worker died: the remaining frames are reduced here")
                    broken = True
                except Exception as err:
                    yield item, err
                    continue
            yield item, _attempt(lambda job=job: compute(job))


_END = object()


def _attempt(function: Callable[[], Result]) -> Result | Exception:
    try:
        return function()
    except Exception as err:
        return err
