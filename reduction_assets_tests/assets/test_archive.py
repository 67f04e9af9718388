"""archive_records as a Dagster asset on the local archive store: records, versions, refusals."""

import datetime as dt
import hashlib

import pytest
from astropy.io import fits
from sqlalchemy import select

from reduction_assets.catalog import Catalog, Product
from reduction_assets.catalog.models import ArchiveMessage, ArchiveRecord
from reduction_assets.orchestration.resources import ArchiveStoreResource
from reduction_assets.support.checksums import sha256_of
from reduction_assets.support.home import Home
from reduction_assets_tests.catalog_fixtures import BROKER, broker_available
from reduction_assets_tests.conftest import NIGHT, deliver, require
from reduction_assets_tests.runs import PARTITION, BuiltNight, metadata, run_asset, run_partition
from reduction_assets_tests.s3 import SECRET, MotoS3

# The lcosim night: 32 raw frames, 4 masters (bias, dark, two flats), 12 reduced frames, 4 stacks.
FILES = {"raw": 32, "master": 4, "reduced": 12, "stack": 4}


def run_archive(home, **config):
    return run_asset(home, "archive_records", **config)


def records(home) -> list[ArchiveRecord]:
    with Catalog(home.catalog_url()).session() as session:
        rows = list(session.scalars(select(ArchiveRecord).order_by(ArchiveRecord.id)))
        session.expunge_all()
        return rows


@pytest.fixture(scope="module")
def unarchived_night(tmp_path_factory, lcosim_night):
    """The lcosim night reduced and stacked, not yet archived (built once for the module)."""
    home = Home(tmp_path_factory.mktemp("unarchived") / "home").ensure()
    before_archive = [key for key in PARTITION if key.path[-1] != "archive_records"]
    run_partition(home, deliver(lcosim_night.frames, home.landing), selection=before_archive)
    return BuiltNight(home, None)


@pytest.fixture
def archived(home, unarchived_night):
    unarchived_night.copy_into(home)
    result = run_archive(home)
    assert result.success
    return result


def test_every_file_of_the_night_is_archived_once_with_its_fields(home, archived):
    rows = records(home)
    assert {level: sum(1 for r in rows if r.level == level) for level in FILES} == FILES
    assert metadata(archived, "archive_records")["archived"].value == sum(FILES.values())
    reduced = next(r for r in rows if r.level == "reduced")
    stored = home.archive / reduced.object_key
    assert hashlib.md5(stored.read_bytes(), usedforsecurity=False).hexdigest() == reduced.md5
    assert reduced.object_key == f"reduced/lcosim/2026-11-20/v1/{reduced.name}" and reduced.version == 1
    assert reduced.site == "Siding Spring Observatory" and reduced.exptime == 60.0 and reduced.filter
    assert reduced.target in ("NGC 253 field", "SN 2026xyz/host")
    assert reduced.public_date == NIGHT + dt.timedelta(days=365)
    assert len(reduced.footprint) == 4 and all(len(corner) == 2 for corner in reduced.footprint)
    assert any(name.endswith("_science.fits") or "_science_" in name for name in reduced.related)
    assert any("bias" in name for name in reduced.related)
    bias = next(r for r in rows if r.level == "raw" and r.configuration_type == "BIAS")
    assert bias.public_date == NIGHT  # calibrations are public at once
    master = next(r for r in rows if r.level == "master" and r.configuration_type == "master_bias")
    assert len(master.related) == 5 and master.footprint is None
    stack = next(r for r in rows if r.level == "stack")
    assert len(stack.related) == 3 and len(stack.footprint) == 4


def test_materializing_again_makes_no_new_version(home, archived):
    result = run_archive(home)
    assert metadata(result, "archive_records")["archived"].value == 0
    assert metadata(result, "archive_records")["already_archived"].value == sum(FILES.values())
    assert len(records(home)) == sum(FILES.values())


def test_changed_content_under_the_same_name_is_version_2_and_version_1_stays(home, archived):
    rows = records(home)
    first = next(r for r in rows if r.level == "reduced")
    with Catalog(home.catalog_url()).session() as session:
        product = session.get(Product, first.source_id)
        path = home.products / product.path
        rewrite_header(path, COMMENT="reduced again")
        product.checksum = sha256_of(path)  # reduced again: new content, same name
    result = run_archive(home)
    assert metadata(result, "archive_records")["archived"].value == 1
    versions = [r for r in records(home) if r.name == first.name]
    assert [r.version for r in versions] == [1, 2]
    assert (home.archive / versions[0].object_key).exists() and (
        home.archive / versions[1].object_key
    ).exists()
    assert versions[0].md5 != versions[1].md5


def rewrite_header(path, **cards):
    path.chmod(0o644)
    with fits.open(path, mode="update") as hdul:
        for key, value in cards.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value


@pytest.mark.parametrize(
    ("cards", "reason"),
    [
        ({"RAWSUM": None}, "missing keyword RAWSUM"),
        ({"API_KEY": "abc"}, "keyword API_KEY is on the deny-list"),
        ({"NOTE": "password=hunter2"}, "the value of NOTE looks like a credential"),
    ],
)
def test_a_file_with_bad_headers_is_refused_with_its_reason(home, unarchived_night, cards, reason):
    unarchived_night.copy_into(home)
    with Catalog(home.catalog_url()).session() as session:
        product = session.scalars(select(Product).order_by(Product.id)).first()
        path = home.products / product.path
        rewrite_header(path, **cards)
        product.checksum = sha256_of(path)  # as if it had been written so
    result = run_archive(home)
    assert result.success
    table = metadata(result, "archive_records")["files"].value.records
    refused = [row.data for row in table if row.data["status"] == "invalid"]
    assert len(refused) == 1 and reason in refused[0]["reason"]
    assert "hunter2" not in refused[0]["reason"]
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert all(r.name != path.name for r in records(home))


def test_a_product_changed_after_it_was_catalogued_is_not_archived(home, unarchived_night):
    unarchived_night.copy_into(home)
    with Catalog(home.catalog_url()).session() as session:
        product = session.scalars(select(Product).order_by(Product.id)).first()
    rewrite_header(home.products / product.path, COMMENT="edited by hand")
    result = run_archive(home)
    refused = [
        r.data
        for r in metadata(result, "archive_records")["files"].value.records
        if r.data["status"] == "invalid"
    ]
    assert len(refused) == 1 and "changed after it was catalogued" in refused[0]["reason"]
    assert metadata(result, "archive_records")["archived"].value == sum(FILES.values()) - 1


@pytest.fixture(scope="module")
def moto_s3():
    server = MotoS3().start()
    yield server
    server.stop()


def run_archive_to(home, archive_resource, **config):
    return run_asset(home, "archive_records", archive=archive_resource, **config)


def test_files_go_to_s3_and_come_back_with_equal_md5(home, unarchived_night, moto_s3):
    unarchived_night.copy_into(home)
    resource = moto_s3.resource("night-archive")
    resource.store().client.create_bucket(Bucket="night-archive")
    result = run_archive_to(home, resource)
    assert result.success and metadata(result, "archive_records")["archived"].value == sum(FILES.values())
    store = resource.store()
    for row in records(home)[::7]:
        with store.open(row.object_key) as stream:
            assert hashlib.md5(stream.read(), usedforsecurity=False).hexdigest() == row.md5
    assert sorted(store.keys()) == sorted(r.object_key for r in records(home))
    again = run_archive_to(home, resource)
    assert metadata(again, "archive_records")["archived"].value == 0


def test_an_s3_outage_mid_partition_fails_clearly_and_a_rerun_completes_without_duplicates(
    home, unarchived_night, moto_s3, monkeypatch
):
    import reduction_assets.storage.s3 as s3

    unarchived_night.copy_into(home)
    resource = moto_s3.resource("outage-archive")
    resource.store().client.create_bucket(Bucket="outage-archive")
    uploads, upload = [], s3.S3Store._upload

    def failing_after_ten(self, *args, **kwargs):
        uploads.append(args[1])
        if len(uploads) == 10:
            moto_s3.stop()  # the service goes away in the middle of the partition
        return upload(self, *args, **kwargs)

    monkeypatch.setattr(s3, "wait_exponential", lambda **_: lambda state: 0.01)
    monkeypatch.setattr(s3.S3Store, "_upload", failing_after_ten)
    try:
        result = run_archive_to(home, resource)
    finally:
        moto_s3.start()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "could not be uploaded" in failure.event_specific_data.error.message
    assert SECRET not in failure.event_specific_data.error.message
    archived = records(home)
    assert len(archived) == 9  # the tenth upload met the outage: no record for it
    store = resource.store()
    assert sorted(store.keys()) == sorted(r.object_key for r in archived)  # and no orphaned object
    monkeypatch.setattr(s3.S3Store, "_upload", upload)
    rerun = run_archive_to(home, resource)
    assert rerun.success
    assert metadata(rerun, "archive_records")["already_archived"].value == 9
    assert metadata(rerun, "archive_records")["archived"].value == sum(FILES.values()) - 9
    names = [r.name for r in records(home)]
    assert len(names) == len(set(names)) == sum(FILES.values())


def test_progress_counts_the_archived_files_of_each_night(home, archived):
    from reduction_assets.catalog.reports import progress_rows

    with Catalog(home.catalog_url()).session() as session:
        row = progress_rows(session, NIGHT, NIGHT, ["lcosim"])[0]
    assert row["archived"] == sum(FILES.values())


def test_a_camera_with_other_keywords_is_archived_whole(home, noirsim_night):
    # NOIRLab-like headers: IMAGETYP, no DAY-OBS; the keywords required come from the registry
    result = run_partition(home, deliver(noirsim_night.frames, home.landing), instrument="noirsim")
    assert metadata(result, "archive_records")["invalid"].value == 0
    assert metadata(result, "archive_records")["archived"].value == sum(FILES.values())


@pytest.fixture
def listening(request):
    """An exchange of this test's own and a queue bound to everything sent to it."""
    import uuid

    import kombu

    require(broker_available(), f"no AMQP broker at {BROKER}")
    name = f"archive-test-{uuid.uuid4().hex[:8]}"
    connection = kombu.Connection(BROKER)
    queue = kombu.Queue(
        name, kombu.Exchange(name, type="topic", durable=True), routing_key="#", auto_delete=False
    )
    queue(connection.default_channel).declare()

    def received() -> list[dict]:
        messages = []
        while (message := queue(connection.default_channel).get(no_ack=True)) is not None:
            messages.append({"id": message.properties.get("message_id"), **message.payload})
        return messages

    yield name, received
    queue(connection.default_channel).delete()
    kombu.Exchange(name)(connection.default_channel).delete()
    connection.release()


def run_archive_notifying(home, broker, exchange):
    resource = ArchiveStoreResource(kind="local", home=str(home.root), broker_url=broker, exchange=exchange)
    return run_archive_to(home, resource)


def test_each_archived_record_is_announced_on_the_exchange(home, unarchived_night, listening):
    exchange, received = listening
    unarchived_night.copy_into(home)
    result = run_archive_notifying(home, BROKER, exchange)
    assert result.success and metadata(result, "archive_records")["messages_delivered"].value == 52
    messages = received()
    by_id = {int(m["id"]): m for m in messages}
    assert len(messages) == len(by_id) == 52
    for row in records(home):
        message = by_id[row.id]
        assert (message["record_id"], message["key"], message["md5"], message["version"]) == (
            row.id,
            row.object_key,
            row.md5,
            row.version,
        )
        assert (message["level"], message["instrument"], message["night"]) == (
            row.level,
            "lcosim",
            "2026-11-20",
        )


def test_with_the_broker_down_records_commit_and_the_outbox_delivers_later_exactly_once(
    home, unarchived_night, listening
):
    from reduction_assets.tasks.notify import deliver_pending
    from reduction_assets_tests.s3 import free_port

    exchange, received = listening
    unarchived_night.copy_into(home)
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    result = run_archive_notifying(home, down, exchange)
    assert result.success and len(records(home)) == 52
    assert metadata(result, "archive_records")["messages_pending"].value == 52
    assert received() == []
    with Catalog(home.catalog_url()).session() as session:
        errors = {m.last_error for m in session.scalars(select(ArchiveMessage))}
    assert all(error and "guest:guest" not in error for error in errors)
    again = run_archive_notifying(home, BROKER, exchange)  # the next run delivers what waits
    assert metadata(again, "archive_records")["messages_delivered"].value == 52
    assert deliver_pending(Catalog(home.catalog_url()), BROKER, exchange).delivered == 0
    messages = received()
    assert sorted(int(m["id"]) for m in messages) == sorted(r.id for r in records(home))


def test_a_product_missing_from_its_store_is_reported_and_the_rest_archived(home, unarchived_night):
    unarchived_night.copy_into(home)
    with Catalog(home.catalog_url()).session() as session:
        product = session.scalars(select(Product).order_by(Product.id)).first()
    path = home.products / product.path
    path.chmod(0o644)
    path.unlink()
    result = run_archive(home)
    table = metadata(result, "archive_records")["files"].value.records
    refused = [row.data for row in table if row.data["status"] == "invalid"]
    assert len(refused) == 1 and refused[0]["reason"].startswith("unreadable")
    assert metadata(result, "archive_records")["archived"].value == sum(FILES.values()) - 1
