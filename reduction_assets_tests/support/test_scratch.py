"""Scratch that cannot leak: a step's planes live in scratch/<run>/<step>/, held while it works; what
an interrupted step left is found (with its size) and removed by the next step and `verify --repair`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reduction_assets.cli import main
from reduction_assets.support.scratch import HELD, leftover_scratch, remove_leftover_scratch, step_scratch
from reduction_assets_tests.runs import run_partition


def interrupted_step(root, run_id="0f0e-dead-run", step="stacks", megabytes=3):
    """What a step killed in the middle leaves: its folder, its lock file, a planes file."""
    folder = root / run_id / step
    folder.mkdir(parents=True)
    (folder / HELD).touch()
    (folder / "scratch_x").mkdir()
    (folder / "scratch_x" / "0.planes").write_bytes(b"\0" * (megabytes << 20))
    return folder


@pytest.fixture
def holder(tmp_path):
    """A step folder held by another living process (a concurrent run's step)."""
    folder = tmp_path / "scratch" / "live-run" / "stacks"
    folder.mkdir(parents=True)
    code = (
        "import filelock, sys, time\n"
        "held = filelock.FileLock(sys.argv[1])\n"
        "held.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(folder / HELD)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    yield folder
    child.kill()
    child.wait()
    child.stdout.close()


def test_a_steps_scratch_is_named_for_its_run_and_step_and_gone_when_it_ends(tmp_path):
    root = tmp_path / "scratch"
    with step_scratch(root, "run/1", "stacks") as folder:
        assert folder == root / "run_1" / "stacks" and folder.is_dir()
        (folder / "0.planes").write_bytes(b"\0" * 1024)
        assert leftover_scratch(root) == []  # held by this step
    assert not (root / "run_1").exists()


def test_what_an_interrupted_step_left_is_found_with_its_size_and_removed(tmp_path, holder):
    root = holder.parents[1]
    interrupted_step(root)
    (root / "scratch_old1234").mkdir()  # a release before step folders
    found = {item.name: item.size_bytes for item in leftover_scratch(root)}
    assert found == {"0f0e-dead-run/stacks": 3 << 20, "scratch_old1234": 0}
    assert {item.name for item in remove_leftover_scratch(root)} == set(found)
    assert sorted(p.name for p in root.iterdir()) == ["live-run"] and holder.is_dir()


def test_the_next_stacks_step_removes_what_an_interrupted_one_left(home, reduced_lcosim_night):
    reduced_lcosim_night.copy_into(home)
    left = interrupted_step(home.scratch)
    assert run_partition(home, []).success
    assert not left.exists() and list(home.scratch.iterdir()) == []


def test_verify_reports_leftover_scratch_with_its_size_and_repair_removes_it(home, capsys):
    interrupted_step(home.scratch, megabytes=55)
    assert main(["--home", str(home.root), "verify", "--json"]) == 1
    found = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["store"] == "scratch"]
    assert found == [
        {
            "store": "scratch",
            "problem": "leftover_scratch",
            "key": "0f0e-dead-run/stacks",
            "action": "would remove 55.0 MiB",
        }
    ]
    assert main(["--home", str(home.root), "verify", "--repair"]) == 0
    assert list(home.scratch.iterdir()) == []
