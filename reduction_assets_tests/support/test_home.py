"""A home that cannot be written is one clear line and exit 2, never a traceback."""

import pytest

from reduction_assets.cli import main
from reduction_assets.support.home import LOCK_NAME, HomeUnusable


@pytest.fixture
def unwritable(home):
    """A home whose lock cannot be opened for writing (a folder in its place: refused even to root,
    as a read-only or full file system would refuse it)."""
    lock = home.state / LOCK_NAME
    lock.unlink(missing_ok=True)
    lock.mkdir()
    return home


def test_the_lock_of_an_unwritable_home_raises_home_unusable_naming_the_path(unwritable):
    with (
        pytest.raises(HomeUnusable, match=r"cannot be written \(.*home\.lock\); nothing was done"),
        unwritable.lock(),
    ):
        pass


@pytest.mark.parametrize("command", [["process"], ["verify"]])
def test_a_command_on_an_unwritable_home_says_so_in_one_line_and_exits_2(unwritable, capsys, command):
    assert main(["--home", str(unwritable.root), *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{command[0]}: the home {unwritable.root} cannot be written")
