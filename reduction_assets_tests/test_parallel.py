"""Frames reduced side by side on a pool of worker processes: the same bytes as one at a time, in
order, bounded by cores and memory, and nothing lost when a worker dies."""

import functools
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from reduction_assets.reduction.science import NotReducible, ScienceFrame
from reduction_assets.support import parallel
from reduction_assets.support.parallel import (
    POOL_MIN_PIXELS,
    FramePool,
    MasterOnDisk,
    frame_bytes,
    frame_workers,
    reduce_science,
    resample_workers,
    worker_count,
)
from reduction_assets_tests.reduction.frames import build, inputs


@pytest.fixture(scope="module")
def night(registry, lcosim_night):
    """The lcosim test night's masters and science frames (128x128), read once."""
    lco = registry["lcosim"]
    bias = build("bias", inputs(lcosim_night, "bias"), lco).master
    dark = build("dark", inputs(lcosim_night, "dark"), lco, bias=bias).master
    flats = {
        name: build("flat", inputs(lcosim_night, "flat", name), lco, bias=bias, dark=dark).master
        for name in ("rp", "gp")
    }
    science = [
        (path, truth)
        for path, truth in zip(lcosim_night.frames, lcosim_night.truth.frames)
        if truth.frame_type == "science"
    ]
    return lco, bias, dark, flats, science


def prepare(night, pool, item) -> ScienceFrame:
    lco, bias, dark, flats, _ = night
    path, truth = item
    raw = fits.getdata(path)
    masters = {"bias": bias, "dark": dark, "flat": flats[truth.filter]}
    return ScienceFrame(
        raw=raw,
        instrument=lco,
        geometry=lco.geometry(raw.shape, (1, 1)),
        exptime=truth.exptime,
        masters={kind: pool.share((kind, truth.filter), m) for kind, m in masters.items()},
    )


def reduce_all(night, workers, items=None):
    items = night[4] if items is None else items
    with FramePool(workers) as pool:
        assert pool.workers == workers
        return list(pool.map_in_order(reduce_science, items, functools.partial(prepare, night, pool)))


def same(a, b) -> bool:
    return (
        all(
            np.array_equal(getattr(a.calibrated, name), getattr(b.calibrated, name))
            for name in ("sci", "err", "dq")
        )
        and a.calibrated.statistics == b.calibrated.statistics
        and a.sources.tobytes() == b.sources.tobytes()
        and a.source_statistics == b.source_statistics
    )


def test_a_pool_of_two_gives_the_serial_results_bit_for_bit_in_order(night):
    serial, pooled = reduce_all(night, 1), reduce_all(night, 2)
    assert len(serial) == len(pooled) == len(night[4]) == 12
    for (item_s, one), (item_p, two) in zip(serial, pooled):
        assert item_s == item_p
        assert not isinstance(one, Exception) and not isinstance(two, Exception)
        assert same(one, two)
        assert one.source_statistics["n_sources"] > 0


def test_a_frame_that_cannot_be_reduced_is_reported_in_its_place_and_the_rest_are_reduced(night):
    items = list(night[4][:4])
    items[1] = (items[1][0], type("Truth", (), {"exptime": 0.0, "filter": "rp"})())  # EXPTIME 0
    results = reduce_all(night, 2, items)
    assert [item for item, _ in results] == items
    assert isinstance(results[1][1], NotReducible) and "EXPTIME 0" in str(results[1][1])
    assert all(not isinstance(result, Exception) for i, (_, result) in enumerate(results) if i != 1)


def test_a_failure_to_read_a_frame_is_reported_in_its_place(night, tmp_path):
    items = list(night[4][:3])
    items[2] = (tmp_path / "vanished.fits", items[2][1])
    results = reduce_all(night, 2, items)
    assert isinstance(results[2][1], FileNotFoundError)
    assert not isinstance(results[0][1], Exception) and not isinstance(results[1][1], Exception)


def dies_in_a_worker(value: int) -> int:
    """Kills the worker process it runs in (as the kernel's OOM killer would); here, returns."""
    if multiprocessing.parent_process() is not None:
        os._exit(1)
    return value * 10


def test_when_a_worker_dies_the_remaining_items_are_computed_here(caplog):
    with FramePool(2) as pool:
        results = list(pool.map_in_order(dies_in_a_worker, range(6), lambda value: value))
    assert results == [(value, value * 10) for value in range(6)]
    assert "a frame worker died" in caplog.text


def test_masters_are_written_once_per_pool_and_removed_with_it(night):
    _, bias, *_ = night
    with FramePool(2) as pool:
        first, again = pool.share("bias", bias), pool.share("bias", bias)
        assert isinstance(first, MasterOnDisk) and first == again
        folder = Path(first.folder)
        assert sorted(p.name for p in folder.iterdir()) == ["data.npy", "dq.npy", "error.npy"]
        loaded = parallel.load_master(first)
        assert np.array_equal(loaded.data, bias.data) and np.array_equal(loaded.dq, bias.dq)
    assert not folder.exists()
    with FramePool(1) as pool:
        assert pool.share("bias", bias) is bias  # one at a time: nothing written


def test_a_process_that_may_not_have_children_reduces_frames_itself(monkeypatch):
    monkeypatch.setattr(
        parallel.multiprocessing, "current_process", lambda: type("Daemon", (), {"daemon": True})()
    )
    with FramePool(2) as pool:
        assert pool.workers == 1
        assert list(pool.map_in_order(abs, [-1, -2], lambda value: value)) == [(-1, 1), (-2, 2)]


def test_workers_are_bounded_by_cores_tasks_and_memory():
    gib = 2**30
    assert worker_count(tasks=32, bytes_per_task=gib, memory_budget=16 * gib, cores=2) == 2
    assert worker_count(tasks=1, bytes_per_task=gib, memory_budget=16 * gib, cores=8) == 1
    assert worker_count(tasks=32, bytes_per_task=gib, memory_budget=3 * gib, cores=8) == 3
    assert worker_count(tasks=32, bytes_per_task=4 * gib, memory_budget=gib, cores=8) == 1


def test_a_2048_frame_needs_about_800_mib_and_small_nights_stay_in_one_process():
    assert frame_bytes((2048, 2048)) == 2048 * 2048 * parallel.BYTES_PER_PIXEL
    assert 0.5 * 2**30 < frame_bytes((2048, 2048)) < 1.5 * 2**30
    assert frame_workers([(128, 128)] * 12, 4 * 2**30, cores=2) == 1
    assert POOL_MIN_PIXELS > 12 * 128 * 128
    assert frame_workers([(2048, 2048)] * 32, 4 * 2**30, cores=2) == 2
    assert frame_workers([(2048, 2048)] * 32, 2**30, cores=2) == 1  # one frame's peak fits


def test_resampling_workers_are_those_asked_for_within_cores_members_and_memory():
    # 20 members of 2048x2048 onto a grid of 2100x2100: 175 MiB each at the peak (measured).
    members, grid = [(2048, 2048)] * 20, (2100, 2100)
    assert resample_workers(1, members, grid, 4 * 2**30, cores=8) == 1  # the default: numba threads
    assert resample_workers(2, members, grid, 4 * 2**30, cores=8) == 2
    assert resample_workers(16, members, grid, 4 * 2**30, cores=2) == 2
    assert resample_workers(16, members[:3], grid, 4 * 2**30, cores=8) == 3
    assert resample_workers(8, members, grid, 300 * 2**20, cores=8) == 1  # one member's peak fits


def test_a_containers_cpu_quota_bounds_the_cores(tmp_path):
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # 1.5 CPUs
    assert parallel._cgroup_cpu_quota(limit) == 2
    limit.write_text("max 100000\n")
    assert parallel._cgroup_cpu_quota(limit) is None
    assert parallel._cgroup_cpu_quota(tmp_path / "absent") is None
    assert 1 <= parallel.available_cores() <= (os.cpu_count() or 1)


def worker_pid(_) -> int:
    return os.getpid()


def pool_in_a_step_process(queue) -> None:
    with FramePool(2) as pool:
        pids = [pid for _, pid in pool.map_in_order(worker_pid, range(4), lambda value: value)]
    queue.put((os.getpid(), pids))


def test_a_step_process_started_from_a_fork_server_runs_its_own_pool():
    # Dagster's multiprocess executor starts each step from a fork server; the step's pool is a
    # second level of processes.
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    step = context.Process(target=pool_in_a_step_process, args=(queue,))
    step.start()
    step_pid, pids = queue.get(timeout=120)
    step.join(30)
    assert step.exitcode == 0 and len(pids) == 4 and step_pid not in pids
