"""Planning recalibration: which partitions run again because their frames now have nearer calibrations,
they hold masters or products marked stale, or an operator sent them back through the graph."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass

from reduction_assets.catalog.integrity import StalePartition
from reduction_assets.catalog.operations import PendingRework
from reduction_assets.support.keys import NightPartition

PartitionOf = tuple[str, dt.date]  # (instrument, night)


@dataclass(frozen=True)
class Recalibration:
    """A partition to run again, and why."""

    instrument: str
    night: dt.date
    run_key: str
    frames: int  # reduced frames that now have a nearer calibration
    masters: bool  # a master must be remade: run from the masters on, else from the reduced frames
    by_operator: bool  # an operator asked for it (``rework``)
    stale: bool  # it holds masters or products marked stale

    @property
    def rebuild(self) -> str:
        """What is rebuilt: "masters", "products" or "none"."""
        return "masters" if self.masters else ("products" if self.stale else "none")


def plan_recalibrations(
    nearer: Mapping[PartitionOf, list],
    damaged: Mapping[PartitionOf, StalePartition],
    rework: Mapping[PartitionOf, PendingRework],
    busy: Set[str] = frozenset(),
) -> list[Recalibration]:
    """The partitions to run again, oldest night first, but those in ``busy`` (a run works on them)."""
    plans = []
    for instrument, night in sorted(
        set(nearer) | set(damaged) | set(rework), key=lambda key: (key[1], key[0])
    ):
        if NightPartition(instrument, night).key in busy:
            continue
        frames = sorted(nearer.get((instrument, night), []), key=lambda f: f[0])
        stale = damaged.get((instrument, night))
        asked = rework.get((instrument, night))
        # The key changes with what is to be redone, so a partition asked again for new reasons runs again.
        digest = hashlib.sha256(
            json.dumps([frames, stale and stale.version, asked and asked.ids], sort_keys=True).encode()
        )
        plans.append(
            Recalibration(
                instrument=instrument,
                night=night,
                run_key=f"recalibrate:{instrument}|{night.isoformat()}:{digest.hexdigest()[:20]}",
                frames=len(frames),
                masters=bool((stale and stale.masters) or (asked and asked.masters)),
                by_operator=bool(asked),
                stale=bool(stale),
            )
        )
    return plans
