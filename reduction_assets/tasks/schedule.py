"""When a night's calibration block is complete, so that its master is made once, from all of it.

Observatories take their calibrations in blocks (biases and darks in the afternoon, twilight flats at
dusk or dawn) and then move on. A master made from a block still being taken would be remade with
every new frame, and the science frames reduced with it redone each time; made once the block is
complete, it is made once. Science frames do not wait: they are reduced at once with the best
masters available (an earlier night's), and again by the calibration sensor when the night's own
masters appear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def block_open(
    block: Iterable[dt.datetime], others: Iterable[dt.datetime], closes_at: dt.datetime, now: dt.datetime
) -> bool:
    """Whether a calibration block may still grow: no frame of another kind was taken after its last
    frame, and the site's closing time for the night (UTC, like every argument) has not come."""
    last = max(block)
    if any(time > last for time in others):
        return False
    return now < closes_at


def utc_now() -> dt.datetime:
    """The time the rule is applied at (aware, UTC); tests set it."""
    return dt.datetime.now(dt.UTC)
