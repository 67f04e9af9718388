"""`reduction-assets verify`: check every stored file against the catalog, and repair what can be.

* raw copies and quarantine copies that are missing or damaged are restored from landing/ when a
  landing file with the same content is still there (landing is only read);
* masters and reduced frames that are missing or damaged are marked stale: the next run of their
  partition (the calibration sensor or `process` asks for it) rebuilds them, and the products made
  with a damaged master are redone after it;
* archived objects (the local archive or an S3 bucket) that are missing or differ from their
  record's SHA-256 are uploaded again from their source file in the home when it still has that
  content;
* temporary files of interrupted writes (``.incoming-*``) and the scratch of interrupted steps are
  removed;
* files no catalog row points at are reported, never deleted.

Without ``repair`` nothing is changed: the report says what would be done.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.archive import archived_objects
from reduction_assets.catalog.integrity import (
    PRODUCTS,
    QUARANTINE,
    RAW,
    STACK,
    StoredObject,
    UnreducedFrame,
    mark_calibration_stale,
    mark_product_stale,
    mark_stack_stale,
    science_frames_without_products,
    stored_objects,
)
from reduction_assets.catalog.operations import REDUCED_FRAMES, request_rework
from reduction_assets.fits.headers import FrameRejected
from reduction_assets.storage import Integrity, LocalStore, ObjectStore, StoreError
from reduction_assets.support.checksums import sha256_of
from reduction_assets.support.home import Home, make_dirs
from reduction_assets.support.keys import QUALITY_PREFIX, NightPartition, reduced_key
from reduction_assets.support.scratch import leftover_scratch, remove_leftover_scratch
from reduction_assets.tasks.landing import resolve_in_landing

ARCHIVE = "archive"  # the store name of findings in the archive store
SCRATCH = "scratch"  # the store name of findings in scratch/ (no catalog rows there)
# A temporary file younger than this may belong to a write in progress (the daemon's runs).
LEFTOVER_AGE_SECONDS = 600.0


@dataclass(frozen=True)
class Finding:
    store: str
    key: str
    # missing, checksum_mismatch, leftover_temporary, leftover_scratch, row_missing, not_in_catalog
    problem: str
    action: str  # what was done (or would be done with --repair), or why nothing can be
    repaired: bool = False


@dataclass
class VerifyReport:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Finding]:
        """Problems that remain (orphans are informational and never count)."""
        return [f for f in self.findings if not f.repaired and f.problem != "not_in_catalog"]


def verify_home(
    home: Home,
    catalog: Catalog,
    *,
    repair: bool = False,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
    archive: ObjectStore | None = None,
) -> VerifyReport:
    """Check every file the catalog holds in ``home``'s stores and, given its store, the archive;
    see the module docstring."""
    stores = {
        RAW: LocalStore(home.raw),
        QUARANTINE: LocalStore(home.quarantine),
        PRODUCTS: LocalStore(home.products),
    }
    report = VerifyReport()
    with catalog.session() as session:
        objects = stored_objects(session)
    for item in progress(objects):
        report.checked += 1
        state = stores[item.store].check(item.key, item.checksum)
        if state is Integrity.OK:
            continue
        if item.store in (RAW, QUARANTINE):
            report.findings.append(_restore(home, stores[item.store], item, state, repair))
        else:
            report.findings.append(_mark_stale(catalog, item, state, repair))
    for name, store in stores.items():
        known = {item.key for item in objects if item.store == name}
        report.findings += _unrecorded_findings(name, store, known, catalog, repair)
    report.findings += _scratch_findings(home, repair)
    if archive is not None:
        with catalog.session() as session:
            archived = archived_objects(session)
        report.checked += len(archived)
        report.findings += _archive_findings(home, stores, archive, progress(archived), repair)
    return report


def _archive_findings(
    home: Home, stores: dict[str, ObjectStore], archive: ObjectStore, archived: Iterable, repair: bool
) -> list[Finding]:
    """Archived objects that are missing or differ from their records, and what was done."""
    findings = []
    try:
        for item in archived:
            state = archive.check(item.object_key, item.sha256)
            if state is not Integrity.OK:
                findings.append(_restore_archived(home, stores, archive, item, state, repair))
    except StoreError as err:
        findings.append(Finding(ARCHIVE, "*", "unreachable", f"not checked further: {err}"))
    return findings


def _restore_archived(
    home: Home, stores: dict[str, ObjectStore], archive: ObjectStore, item, state: Integrity, repair: bool
) -> Finding:
    """Upload an archived object again from its source in the home, when that still has its bytes."""
    source = stores[item.source_store]
    where = f"{item.source_store}/{item.source_key}"
    if item.source_key is None or source.check(item.source_key, item.sha256) is not Integrity.OK:
        return Finding(
            ARCHIVE,
            item.object_key,
            state.value,
            "cannot be restored: its source in the home is gone or changed",
        )
    if not repair:
        return Finding(ARCHIVE, item.object_key, state.value, f"would upload again from {where}")
    # A copy under scratch/: an interrupted repair leaves scratch that the next verify removes.
    with tempfile.TemporaryDirectory(dir=make_dirs(home.scratch)) as folder:
        copy = Path(folder) / "object"
        with source.open(item.source_key) as stream, open(copy, "wb") as handle:
            shutil.copyfileobj(stream, handle)
        archive.put_file(copy, item.object_key, item.sha256, replace=True)
    return Finding(ARCHIVE, item.object_key, state.value, f"uploaded again from {where}", repaired=True)


def _unrecorded_findings(
    name: str, store: ObjectStore, known: set[str], catalog: Catalog, repair: bool
) -> list[Finding]:
    """Files of a store no catalog row stands for: temporaries of interrupted writes, reduced frames
    whose row was lost (their frame is reduced again), and orphans (reported, never deleted)."""
    findings = []
    for key in store.leftovers(LEFTOVER_AGE_SECONDS):
        if repair:
            store.remove(key)
        action = "removed" if repair else "would remove"
        findings.append(Finding(name, key, "leftover_temporary", action, repaired=repair))
    if name == PRODUCTS:
        with catalog.session() as session:
            lost = {
                reduced_key(f.instrument, f.night, f.store_path): f
                for f in science_frames_without_products(session)
            }
    else:
        lost = {}
    for key in store.keys():  # noqa: SIM118 - a store, not a dict
        if key in known or (name == PRODUCTS and key.startswith(QUALITY_PREFIX)):
            continue
        if key in lost:
            findings.append(_redo_lost_row(catalog, key, lost[key], repair))
        else:
            findings.append(Finding(name, key, "not_in_catalog", "left in place"))
    return findings


def _redo_lost_row(catalog: Catalog, key: str, frame: UnreducedFrame, repair: bool) -> Finding:
    """A reduced frame whose product row is gone: its partition is asked to reduce it again."""
    partition = NightPartition(frame.instrument, frame.night).key
    if not repair:
        return Finding(PRODUCTS, key, "row_missing", f"would reduce its frame again in {partition}")
    with catalog.session() as session:
        request_rework(
            session, frame.instrument, frame.night, REDUCED_FRAMES, f"verify: no product row for {key}"
        )
    return Finding(PRODUCTS, key, "row_missing", f"its frame is reduced again in {partition}", repaired=True)


def _scratch_findings(home: Home, repair: bool) -> list[Finding]:
    """Scratch of steps that were interrupted (no living step holds it), with its size."""
    leftovers = remove_leftover_scratch(home.scratch) if repair else leftover_scratch(home.scratch)
    verb = "removed" if repair else "would remove"
    return [
        Finding(
            SCRATCH,
            item.name,
            "leftover_scratch",
            f"{verb} {item.size_bytes / 2**20:.1f} MiB",
            repaired=repair,
        )
        for item in leftovers
    ]


def _restore(home: Home, store: ObjectStore, item: StoredObject, state: Integrity, repair: bool) -> Finding:
    for name in item.sources:
        try:
            source = resolve_in_landing(home.landing, name)
        except FrameRejected:
            continue
        if not source.is_file() or sha256_of(source) != item.checksum:
            continue
        if repair:
            store.put_file(source, item.key, item.checksum, replace=True)
        return Finding(
            item.store,
            item.key,
            state.value,
            f"{'restored' if repair else 'would restore'} from landing/{name}",
            repaired=repair,
        )
    return Finding(
        item.store,
        item.key,
        state.value,
        "cannot be restored: no file in landing/ has this content (sha256 "
        f"{item.checksum[:12]}…); landing names: {', '.join(item.sources) or 'none'}",
    )


def _mark_stale(catalog: Catalog, item: StoredObject, state: Integrity, repair: bool) -> Finding:
    partition = f"{item.instrument}|{item.night.isoformat() if item.night else '?'}"
    if not repair:
        return Finding(item.store, item.key, state.value, f"would mark for rebuilding in {partition}")
    with catalog.session() as session:
        if item.kind == "master":
            redone = mark_calibration_stale(session, item.row_id)
            action = f"marked for rebuilding in {partition}, with {redone} products made from it"
        elif item.kind == STACK:
            mark_stack_stale(session, item.row_id)
            action = f"marked for rebuilding in {partition}"
        else:
            mark_product_stale(session, item.row_id)
            action = f"marked for rebuilding in {partition}"
    return Finding(item.store, item.key, state.value, action, repaired=True)
