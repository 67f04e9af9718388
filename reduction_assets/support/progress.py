"""Progress bars for long work, on standard error and only where someone watches (a terminal).

Runs launched by the daemon, cron jobs and tests write no bars: their logs say what was done. Set
REDUCTION_PROGRESS=0 to turn bars off in a terminal too, or 1 to force them on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
PROGRESS_ENV = "REDUCTION_PROGRESS"


def _disabled() -> bool | None:
    setting = os.environ.get(PROGRESS_ENV, "")
    if setting == "0":
        return True
    if setting == "1":
        return False
    return None  # tqdm's own rule: shown when standard error is a terminal


def progress(items: Iterable[T], desc: str, unit: str, total: int | None = None) -> Iterator[T]:
    """``items``, with a bar of ``desc`` counting ``unit``s while they are worked through."""
    return iter(
        tqdm(items, desc=desc, unit=unit, total=total, leave=False, file=sys.stderr, disable=_disabled())
    )
