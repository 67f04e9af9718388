"""Corruption is detected: stored files are verified before use, `verify` checks and repairs them,
and a product's checksum is recorded together with its file."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import delete, select

from reduction_assets.catalog import (
    Calibration,
    Catalog,
    InstrumentRow,
    Product,
    RawFrame,
    Stack,
    StackMember,
)
from reduction_assets.cli import main
from reduction_assets.instruments import load_registry
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.orchestration.sensors import evaluate_recalibration
from reduction_assets.storage import Integrity, LocalStore
from reduction_assets.support.checksums import sha256_of
from reduction_assets.support.home import write_atomic
from reduction_assets_tests.conftest import deliver
from reduction_assets_tests.runs import run_partition


def catalog_rows(home, model, **where):
    with Catalog(home.catalog_url()).session() as session:
        found = list(session.scalars(select(model).filter_by(**where).order_by(model.id)))
        session.expunge_all()
    return found


def damage(path, rows=slice(10, 60)):
    """Zero a band of rows of SCI in place, as a bad disk block would."""
    os.chmod(path, 0o644)
    with fits.open(path, mode="update") as hdul:
        hdul["SCI"].data[rows] = 0.0


def flip_bytes(path, at=-100):
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.seek(at, 2)
        handle.write(b"\x00garbage\x00")


def cli_json(capsys, *argv):
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def night_done(home, reduced_lcosim_night):
    """This test's home holds the lcosim night, reduced (built once)."""
    reduced_lcosim_night.copy_into(home)
    return home


def test_a_corrupted_master_flat_is_never_used_and_is_rebuilt_with_its_frames(night_done):
    home = night_done
    flat = catalog_rows(home, Calibration, type="flat", filter="gp")[0]
    damage(home.products / flat.path)
    result = run_partition(home, [], master_config={"full_refresh": False})
    assert result.success
    (rebuilt,) = catalog_rows(home, Calibration, type="flat", filter="gp")
    assert LocalStore(home.products).check(rebuilt.path, rebuilt.checksum) is Integrity.OK
    gp = [p for p in catalog_rows(home, Product) if p.flat_id == flat.id]
    assert len(gp) == 6 and {p.status for p in gp} == {"reduced"}
    with fits.open(home.products / rebuilt.path) as hdul:
        assert np.median(hdul["SCI"].data[10:60]) > 0.9  # not the zeroed rows


def test_a_master_damaged_after_its_run_marks_itself_and_its_products_for_rebuilding(night_done):
    from dagster import materialize

    from reduction_assets.orchestration.assets.science import reduced_frames
    from reduction_assets.orchestration.partitions import partition_key

    home = night_done
    flat = catalog_rows(home, Calibration, type="flat", filter="gp")[0]
    damage(home.products / flat.path)
    resource = ReductionHomeResource(home=str(home.root))
    result = materialize(
        [reduced_frames],
        partition_key=partition_key("lcosim", "2026-11-20"),
        resources={"home": resource},
        run_config={"ops": {"reduced_frames": {"config": {"full_refresh": True}}}},
    )
    assert result.success
    gp = [p for p in catalog_rows(home, Product) if p.flat_id == flat.id]
    assert {p.status for p in gp} == {"not_reducible"}
    assert all("is checksum_mismatch" in p.reason and "marked for rebuilding" in p.reason for p in gp)
    assert catalog_rows(home, Calibration, id=flat.id)[0].fingerprint == ""
    # The calibration sensor asks for the partition's masters and reduced frames again.
    (request,) = evaluate_recalibration(resource).run_requests
    assert (
        request.partition_key == "lcosim|2026-11-20" and request.tags["reduction_assets/rebuild"] == "masters"
    )
    run_partition(home, [])
    assert {p.status for p in catalog_rows(home, Product)} == {"reduced"}


def test_a_corrupted_raw_copy_is_left_out_of_its_master_and_restored_by_verify(night_done, capsys):
    home = night_done
    bias = catalog_rows(home, RawFrame, frame_type="bias")[0]
    flip_bytes(home.raw / bias.store_path)
    run_partition(home, [])
    master = catalog_rows(home, Calibration, type="bias")[0]
    assert master.input_count == 4
    assert any(
        r["frame"] == bias.original_name and "checksum_mismatch" in r["reason"] for r in master.rejected
    )

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--json")
    assert code == 1 and report["findings"] == [
        {
            "store": "raw",
            "problem": "checksum_mismatch",
            "key": bias.store_path,
            "action": f"would restore from landing/{bias.original_name}",
        }
    ]
    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--repair", "--json")
    assert code == 0 and report["findings"][0]["action"] == f"restored from landing/{bias.original_name}"
    assert sha256_of(home.raw / bias.store_path) == bias.checksum
    run_partition(home, [])
    assert catalog_rows(home, Calibration, type="bias")[0].input_count == 5


def test_verify_reports_what_cannot_be_restored_and_removes_leftover_temporaries(night_done, capsys):
    home = night_done
    bias = catalog_rows(home, RawFrame, frame_type="bias")[0]
    os.remove(home.landing / bias.original_name)
    os.chmod(home.raw / bias.store_path, 0o644)
    os.remove(home.raw / bias.store_path)
    product = catalog_rows(home, Product)[0]
    flip_bytes(home.products / product.path)
    leftover = home.products / "reduced" / ".incoming-abandoned"
    leftover.write_bytes(b"half a product")
    os.utime(leftover, (time.time() - 3600,) * 2)
    stray = home.products / "reduced" / "stray.fits"
    stray.write_bytes(b"x")

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--repair", "--json")
    found = {(f["store"], f["problem"], f["key"]): f["action"] for f in report["findings"]}
    # raw, masters, reduced frames, stacks, and each one's archived copy
    assert code == 1 and report["checked"] == 2 * (32 + 4 + 12 + 4)
    assert found[("raw", "missing", bias.store_path)].startswith("cannot be restored: no file in landing/")
    assert (
        found[("products", "checksum_mismatch", product.path)] == "marked for rebuilding in lcosim|2026-11-20"
    )
    assert found[("products", "leftover_temporary", "reduced/.incoming-abandoned")] == "removed"
    assert found[("products", "not_in_catalog", "reduced/stray.fits")] == "left in place"
    assert not leftover.exists() and stray.exists()
    run_partition(home, [])
    redone = catalog_rows(home, Product, id=product.id)[0]
    assert LocalStore(home.products).check(redone.path, redone.checksum) is Integrity.OK


def test_a_crash_between_publishing_a_product_and_committing_its_row_is_redone(night_done, monkeypatch):
    from reduction_assets.storage.local import LocalStagedObject as StagedObject

    home = night_done
    before = {p.id: p.checksum for p in catalog_rows(home, Product)}
    real_publish = StagedObject.publish
    published = []

    def publish_then_die(self):
        real_publish(self)
        published.append(self.key)
        raise KeyboardInterrupt("power cut after the rename, before the commit")

    monkeypatch.setattr(StagedObject, "publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        from dagster import materialize

        from reduction_assets.orchestration.assets.science import reduced_frames
        from reduction_assets.orchestration.partitions import partition_key

        materialize(
            [reduced_frames],
            partition_key=partition_key("lcosim", "2026-11-20"),
            resources={"home": ReductionHomeResource(home=str(home.root))},
            # Another threshold: a product with other bytes (the same settings make the same bytes).
            run_config={
                "ops": {"reduced_frames": {"config": {"full_refresh": True, "detection_threshold": 8.0}}}
            },
        )
    monkeypatch.setattr(StagedObject, "publish", real_publish)
    (key,) = published
    (victim,) = [p for p in catalog_rows(home, Product) if p.path == key]
    assert victim.checksum == before[victim.id]  # the row was rolled back ...
    assert sha256_of(home.products / key) != victim.checksum  # ... the file is the new one
    run_partition(home, [])  # same fingerprint: only the checksum says the product must be redone
    redone = catalog_rows(home, Product, id=victim.id)[0]
    assert sha256_of(home.products / key) == redone.checksum


def test_an_interrupted_state_write_leaves_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "state" / "cursor"
    write_atomic(target, "old")

    def failing_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new and longer")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["cursor"]


def test_a_read_only_run_succeeds_while_another_client_holds_the_sqlite_writer_lock(night_done):
    home = night_done
    holder = sqlite3.connect(home.root / "catalog.sqlite", isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        result = run_partition(home, [])  # everything is up to date: nothing to write
        assert result.success and time.monotonic() - started < 30
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_instruments_table_is_written_only_when_the_registry_changes(home):
    catalog = Catalog(home.catalog_url())
    catalog.create()
    registry = load_registry()
    catalog.sync_instruments(registry)
    with catalog.session() as session:
        first = {row.name: row.updated_at for row in session.scalars(select(InstrumentRow))}
    again = Catalog(home.catalog_url())  # a new process: compares, finds nothing to write
    again.sync_instruments(registry)
    with again.session() as session:
        assert {row.name: row.updated_at for row in session.scalars(select(InstrumentRow))} == first
    assert set(first) == set(registry.names)


def test_a_concurrent_insert_of_the_same_frame_counts_as_already_ingested(home, lcosim_night):
    from reduction_assets.orchestration.partitions import night_in_range
    from reduction_assets.tasks.ingest import Ingestor

    (name,) = deliver(lcosim_night.frames[:1], home.landing)
    catalog = Catalog(home.catalog_url())
    catalog.create()
    catalog.sync_instruments(load_registry())

    def ingestor():
        return Ingestor(
            landing=home.landing,
            registry=load_registry(),
            catalog=catalog,
            raw_store=LocalStore(home.raw),
            quarantine_store=LocalStore(home.quarantine),
            night_in_range=night_in_range,
        )

    racing = ingestor()
    real_put = racing.raw_store.put_file

    def put_while_another_ingests(*args, **kwargs):
        # The other ingestion commits its row between our lookup and our insert.
        other = ingestor().ingest([name])
        assert other.ingested == [name]
        return real_put(*args, **kwargs)

    racing.raw_store.put_file = put_while_another_ingests
    report = racing.ingest([name])
    assert report.already_ingested == [name] and report.ingested == []
    with catalog.session() as session:
        assert len(list(session.scalars(select(RawFrame)))) == 1


def test_a_product_unchanged_since_its_record_is_trusted_without_reading_it(tmp_path, monkeypatch):
    import datetime as dt
    import os

    import reduction_assets.storage.local as local
    from reduction_assets.storage import Integrity, LocalStore, write_object

    store = LocalStore(tmp_path)
    checksum = write_object(store, "reduced/a.fits", lambda stream: stream.write(b"x" * 2880))
    recorded = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=1)
    read = []
    real = local.sha256_of
    monkeypatch.setattr(local, "sha256_of", lambda path: read.append(path) or real(path))
    assert store.check_since("reduced/a.fits", checksum, recorded) is Integrity.OK and read == []
    # Written after it was recorded: read and found changed.
    (tmp_path / "reduced/a.fits").write_bytes(b"y" * 2880)
    later = (recorded + dt.timedelta(seconds=60)).replace(tzinfo=dt.UTC).timestamp()
    os.utime(tmp_path / "reduced/a.fits", (later, later))
    assert store.check_since("reduced/a.fits", checksum, recorded) is Integrity.MISMATCH and len(read) == 1
    assert store.check_since("reduced/b.fits", checksum, recorded) is Integrity.MISSING


def test_verify_checks_the_archive_and_uploads_a_damaged_object_again_from_its_source(night_done, capsys):
    home = night_done
    archived = sorted(p for p in home.archive.rglob("*.fits") if "/reduced/" in str(p))
    assert archived, "the built night archives its reduced frames"
    flip_bytes(archived[0])
    os.chmod(archived[-1], 0o644)
    os.remove(archived[-1])
    key_of = {p: str(p.relative_to(home.archive)) for p in (archived[0], archived[-1])}

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--json")
    found = {(f["problem"], f["key"]): f["action"] for f in report["findings"] if f["store"] == "archive"}
    assert code == 1 and set(found) == {
        ("checksum_mismatch", key_of[archived[0]]),
        ("missing", key_of[archived[-1]]),
    }
    assert all(action.startswith("would upload again from products/reduced/") for action in found.values())

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--repair", "--json")
    assert code == 0 and {f["action"].split(" from ")[0] for f in report["findings"]} == {"uploaded again"}
    assert main(["--home", str(home.root), "verify"]) == 0  # the archive is whole again
    assert archived[-1].exists()


def test_an_archived_object_whose_source_is_gone_cannot_be_restored(night_done, capsys):
    from reduction_assets.catalog.models import ArchiveRecord

    home = night_done
    raw_object = sorted(p for p in home.archive.rglob("*.fits") if "/raw/" in str(p))[0]
    key = str(raw_object.relative_to(home.archive))
    (record,) = catalog_rows(home, ArchiveRecord, object_key=key)
    (frame,) = catalog_rows(home, RawFrame, id=record.source_id)
    flip_bytes(raw_object)
    os.remove(home.landing / frame.original_name)  # nothing left to restore the raw copy from
    os.chmod(home.raw / frame.store_path, 0o644)
    os.remove(home.raw / frame.store_path)
    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--repair", "--json")
    (finding,) = [f for f in report["findings"] if f["store"] == "archive"]
    assert code == 1 and (finding["key"], finding["problem"]) == (key, "checksum_mismatch")
    assert finding["action"] == "cannot be restored: its source in the home is gone or changed"


def test_a_reduced_frame_whose_row_was_lost_is_reduced_again_after_verify_repair(night_done, capsys):
    home = night_done
    references = {s.reference_product_id for s in catalog_rows(home, Stack)}
    lost = next(p for p in catalog_rows(home, Product) if p.id not in references)
    with Catalog(home.catalog_url()).session() as session:  # as a careless cleanup by hand would
        session.execute(delete(StackMember).where(StackMember.product_id == lost.id))
        session.delete(session.get(Product, lost.id))

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--json")
    (finding,) = [f for f in report["findings"] if f["key"] == lost.path]
    assert code == 1 and finding["problem"] == "row_missing"
    assert finding["action"] == "would reduce its frame again in lcosim|2026-11-20"

    code, report = cli_json(capsys, "--home", str(home.root), "verify", "--repair", "--json")
    assert code == 0
    # The calibration sensor (or the next `process`) asks for the partition's reduced frames again.
    (request,) = evaluate_recalibration(ReductionHomeResource(home=str(home.root))).run_requests
    assert request.partition_key == "lcosim|2026-11-20"
    run_partition(home, [])
    (redone,) = catalog_rows(home, Product, raw_frame_id=lost.raw_frame_id)
    assert redone.status == "reduced" and redone.path == lost.path
    assert main(["--home", str(home.root), "verify"]) == 0
