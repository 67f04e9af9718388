"""Landing from an S3 prefix (moto's S3 server over HTTP): settled objects are copied into
landing/s3/ and follow landing/'s rules; the sensor and `process` do it alike."""

from __future__ import annotations

import hashlib
import json

import pytest
from dagster import build_sensor_context

from reduction_assets.orchestration.process import instance_for, process_landing
from reduction_assets.orchestration.resources import LandingSourceResource, ReductionHomeResource
from reduction_assets.orchestration.sensors import landing_sensor
from reduction_assets.tasks.landing_s3 import mirror_arrivals
from reduction_assets_tests.s3 import SECRET, MotoS3
from reduction_assets_tests.test_cli import cli


@pytest.fixture(scope="module")
def moto_s3():
    server = MotoS3().start()
    yield server
    server.stop()


def source_for(moto_s3: MotoS3, bucket: str) -> LandingSourceResource:
    return LandingSourceResource(
        kind="s3",
        bucket=bucket,
        prefix="incoming/",
        endpoint_url=moto_s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=SECRET,
        max_attempts=1,
    )


@pytest.fixture
def bucket(moto_s3, request, lcosim_night):
    """A bucket whose incoming/ prefix holds the lcosim night, a note and a transfer in progress."""
    name = "landing-" + hashlib.md5(request.node.name.encode(), usedforsecurity=False).hexdigest()[:12]
    store = source_for(moto_s3, name).store()
    store.client.create_bucket(Bucket=name)
    for frame in lcosim_night.frames:
        store.client.upload_file(str(frame), name, f"incoming/2026-11-20/{frame.name}")
    store.client.put_object(Bucket=name, Key="incoming/notes.txt", Body=b"not a FITS file")
    store.client.put_object(Bucket=name, Key="incoming/2026-11-20/late.fits.part", Body=b"half")
    return name


def test_settled_objects_are_copied_once_and_young_ones_wait(moto_s3, bucket, tmp_path):
    store = source_for(moto_s3, bucket).store()
    young = mirror_arrivals(store, tmp_path, settle_seconds=3600)
    assert young.copied == [] and len(young.waiting) == 33  # 32 frames and the note; not the .part
    first = mirror_arrivals(store, tmp_path, settle_seconds=0)
    assert len(first.copied) == 33 and not (tmp_path / "s3/2026-11-20/late.fits.part").exists()
    copy = tmp_path / "s3/2026-11-20/lcosim_20261120_0001_bias.fits"
    assert (
        copy.stat().st_size
        == store.client.head_object(Bucket=bucket, Key="incoming/2026-11-20/lcosim_20261120_0001_bias.fits")[
            "ContentLength"
        ]
    )
    again = mirror_arrivals(store, tmp_path, settle_seconds=0)
    assert again.copied == [] and again.unchanged == 33


def test_process_ingests_a_night_from_the_bucket_and_quarantines_what_is_not_a_frame(
    moto_s3, bucket, home, capsys, monkeypatch
):
    monkeypatch.setenv("REDUCTION_LANDING_STORE", "s3")
    monkeypatch.setenv("REDUCTION_LANDING_BUCKET", bucket)
    monkeypatch.setenv("REDUCTION_LANDING_PREFIX", "incoming/")
    monkeypatch.setenv("REDUCTION_LANDING_ENDPOINT_URL", moto_s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    outcome = process_landing(home, settle_seconds=0, echo=lambda line: None)
    assert not outcome.failed and len(outcome.runs) == 2  # the night, and the rejects
    capsys.readouterr()  # the runs' logs
    code, out = cli(
        capsys, "--home", str(home.root), "progress", "2026-11-20", "--instrument", "lcosim", "--json"
    )
    row = json.loads(out)[0]
    assert (row["raw"], row["reduced"], row["stacked"]) == (32, 12, 4)
    code, out = cli(capsys, "--home", str(home.root), "quarantine", "--json")
    assert code == 0
    assert [entry["original_path"] for entry in json.loads(out)] == ["s3/notes.txt"]
    assert SECRET not in out
    assert process_landing(home, settle_seconds=0, echo=lambda line: None).runs == []


def test_the_landing_sensor_copies_from_the_bucket_and_asks_for_the_night(moto_s3, bucket, home):
    instance = instance_for(home)
    try:
        context = build_sensor_context(
            instance=instance,
            resources={
                "home": ReductionHomeResource(home=str(home.root), settle_seconds=0),
                "landing_source": source_for(moto_s3, bucket),
            },
        )
        result = landing_sensor(context)
    finally:
        instance.dispose()
    partitions = sorted(str(r.partition_key) for r in result.run_requests if r.partition_key)
    assert partitions == ["lcosim|2026-11-20"]
    assert len(list((home.landing / "s3" / "2026-11-20").glob("*.fits"))) == 32


def test_a_bucket_that_cannot_be_read_leaves_landing_as_it_is(moto_s3, home):
    instance = instance_for(home)
    try:
        context = build_sensor_context(
            instance=instance,
            resources={
                "home": ReductionHomeResource(home=str(home.root), settle_seconds=0),
                "landing_source": source_for(moto_s3, "no-such-bucket"),
            },
        )
        result = landing_sensor(context)
    finally:
        instance.dispose()
    assert result.run_requests == [] and "no new files" in result.skip_reason.skip_message
