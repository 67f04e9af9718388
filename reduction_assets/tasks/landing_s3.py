"""Arrivals in an S3 prefix: copied, once settled, into ``landing/s3/`` and from there treated like any
landing file (the same settle time, the same memory of what was asked for, the same quarantine).

An object is copied when it has been unmodified for the settle time (S3 objects appear whole, but a
telescope may overwrite one while it is still being written), and again when its size or time
changes. The copy keeps the object's modification time, so landing/'s own settle rule sees the
object's age. Objects with hidden or temporary names are left alone, as in landing/. A copy is
written under a temporary name and renamed, so landing/ never shows a partial file.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from reduction_assets.storage.base import StoreError, key_parts
from reduction_assets.tasks.landing import ignored_reason

# landing/ subfolder that holds the copies of S3 arrivals.
MIRROR_FOLDER = "s3"
# A tick copies at most this much; the rest follows at the next tick (the sensor's tick has a timeout).
MAX_BYTES_PER_PASS = 4 * 2**30


@dataclass
class MirrorReport:
    copied: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # modified less than the settle time ago
    deferred: list[str] = field(default_factory=list)  # beyond this pass's byte budget
    refused: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    unchanged: int = 0


def mirror_arrivals(
    store,
    landing: Path,
    *,
    settle_seconds: float,
    now: float | None = None,
    max_bytes: int = MAX_BYTES_PER_PASS,
) -> MirrorReport:
    """Copy the settled, new or changed objects of an :class:`~reduction_assets.storage.s3.S3Store`
    into ``landing/s3/``. Raises :class:`StoreError` when the bucket cannot be listed."""
    now = time.time() if now is None else now
    target_root = landing / MIRROR_FOLDER
    report = MirrorReport()
    budget = max_bytes
    for entry in store.entries():
        name = entry.key.rsplit("/", 1)[-1]
        if not entry.key or entry.key.endswith("/") or ignored_reason(name):
            continue
        try:
            parts = key_parts(entry.key)
        except StoreError as err:
            report.refused.append((entry.key, str(err)))
            continue
        modified = entry.modified.astimezone(dt.UTC).timestamp()
        if now - modified < settle_seconds:
            report.waiting.append(entry.key)
            continue
        local = target_root.joinpath(*parts)
        mtime_ns = int(round(modified * 1e9))
        try:
            st = local.stat()
            if st.st_size == entry.size and st.st_mtime_ns == mtime_ns:
                report.unchanged += 1
                continue
        except FileNotFoundError:
            pass
        if entry.size > budget and report.copied:
            report.deferred.append(entry.key)
            continue
        try:
            store.download(entry.key, local)
        except StoreError as err:
            report.refused.append((entry.key, str(err)))
            continue
        os.utime(local, ns=(mtime_ns, mtime_ns))
        budget -= entry.size
        report.copied.append(entry.key)
    return report
