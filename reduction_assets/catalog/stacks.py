"""Stacks in the catalog: one row per (night, instrument, target, filter, binning) group, with its
members, and the reduced frames a partition's stacks are made from."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from reduction_assets.catalog.models import Product, RawFrame, Stack, StackMember, utcnow
from reduction_assets.catalog.products import REDUCED

STACKED = "stacked"  # a stack was made
NOT_STACKED = "not_stacked"  # the group was not stacked (one frame, members left out, refused)
FAILED = "failed"  # stacking failed for a reason outside the data (a member missing from the store)
RETIRED = "retired"  # the fingerprint of a stack whose group has no reduced frames left


def reduced_frames_of(session: Session, instrument: str, night: dt.date) -> list[tuple[Product, RawFrame]]:
    """The reduced science frames of a partition (product and raw frame; frames marked bad left
    out), in time order: what is stacked and archived."""
    rows = session.execute(
        select(Product, RawFrame)
        .join(RawFrame, Product.raw_frame_id == RawFrame.id)
        .where(
            Product.kind == REDUCED,
            Product.status == REDUCED,
            Product.instrument == instrument,
            Product.night == night,
            RawFrame.bad.is_(False),
        )
        .order_by(RawFrame.date_obs, RawFrame.id)
    ).all()
    session.expunge_all()
    return [(product, frame) for product, frame in rows]


def stacks_of(session: Session, instrument: str, night: dt.date) -> list[Stack]:
    """The stack rows of a partition with their members."""
    rows = list(
        session.scalars(
            select(Stack)
            .options(selectinload(Stack.members))
            .where(Stack.instrument == instrument, Stack.night == night)
            .order_by(Stack.group_key)
        )
    )
    session.expunge_all()
    return rows


def record_stack(
    session: Session,
    *,
    instrument: str,
    night: dt.date,
    group_key: str,
    members: list[dict[str, Any]],
    **values: Any,
) -> Stack:
    """Insert or update a group's stack row and replace its members (dicts of StackMember fields)."""
    row = session.scalars(
        select(Stack).where(
            Stack.instrument == instrument, Stack.night == night, Stack.group_key == group_key
        )
    ).first()
    if row is None:
        row = Stack(instrument=instrument, night=night, group_key=group_key, created_at=utcnow())
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    row.members.clear()
    session.flush()
    row.members.extend(StackMember(**member) for member in members)
    session.flush()
    return row


def retire_stacks(session: Session, instrument: str, night: dt.date, keep: set[str]) -> list[str]:
    """Mark the partition's stacks of groups that no longer have reduced frames as not stacked
    (their members cleared); returns their group keys."""
    retired = []
    for row in session.scalars(select(Stack).where(Stack.instrument == instrument, Stack.night == night)):
        if row.group_key in keep or (row.status == NOT_STACKED and not row.members):
            continue
        row.status, row.reason, row.path, row.checksum = (
            NOT_STACKED,
            "no reduced frames left in the group",
            None,
            None,
        )
        row.n_members = 0
        # No digest matches this, so a group whose frames come back is stacked again; it is not
        # STALE, which would ask for a run of a partition that has nothing to stack.
        row.fingerprint = RETIRED
        row.members.clear()
        row.updated_at = utcnow()
        retired.append(row.group_key)
    session.flush()
    return retired
