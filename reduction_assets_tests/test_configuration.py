"""One configuration path: the archive store the environment chooses is the one every entry point
uses. `process` used to build its definitions without it and archived locally whatever was set."""

from __future__ import annotations

import hashlib

import pytest

from reduction_assets.cli import main
from reduction_assets_tests.conftest import deliver, frames_of
from reduction_assets_tests.s3 import SECRET, MotoS3, free_port

pytestmark = pytest.mark.slow(60)


@pytest.fixture(scope="module")
def moto_s3():
    server = MotoS3().start()
    yield server
    server.stop()


def archive_in_s3(monkeypatch, endpoint: str, bucket: str) -> None:
    settings = {
        "REDUCTION_ARCHIVE_STORE": "s3",
        "REDUCTION_ARCHIVE_BUCKET": bucket,
        "REDUCTION_ARCHIVE_PREFIX": "observatory/",
        "REDUCTION_ARCHIVE_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


def local_archive(home) -> list:
    return [p for p in home.archive.rglob("*") if p.is_file()] if home.archive.exists() else []


def test_process_archives_into_the_configured_bucket_and_nothing_locally(
    home, lcosim_night, moto_s3, monkeypatch, request
):
    bucket = "archive-" + hashlib.md5(request.node.name.encode(), usedforsecurity=False).hexdigest()[:12]
    moto_s3.resource(bucket).store().client.create_bucket(Bucket=bucket)
    archive_in_s3(monkeypatch, moto_s3.endpoint, bucket)
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    stored = list(moto_s3.resource(bucket).store().keys())
    assert len(stored) == 6  # five raw biases and their master
    assert local_archive(home) == []


def test_process_with_the_bucket_unreachable_fails_and_archives_nothing_locally(
    home, lcosim_night, monkeypatch, capsys
):
    archive_in_s3(monkeypatch, f"http://127.0.0.1:{free_port()}", "nowhere")  # nothing listens
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out, out
    assert local_archive(home) == []
    assert SECRET not in out


def test_verify_checks_the_configured_bucket_and_says_when_it_cannot_reach_it(
    home, lcosim_night, moto_s3, monkeypatch, request, capsys
):
    import json

    bucket = "verify-" + hashlib.md5(request.node.name.encode(), usedforsecurity=False).hexdigest()[:12]
    store = moto_s3.resource(bucket).store()
    store.client.create_bucket(Bucket=bucket)
    archive_in_s3(monkeypatch, moto_s3.endpoint, bucket)
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    capsys.readouterr()
    assert main(["--home", str(home.root), "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 2 * 6  # the home's files and their objects
    first = sorted(store.keys())[0]
    store.client.delete_object(Bucket=bucket, Key="observatory/" + first)
    assert main(["--home", str(home.root), "verify", "--json"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert (finding["store"], finding["key"], finding["problem"]) == ("archive", first, "missing")
    monkeypatch.setenv("REDUCTION_ARCHIVE_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["--home", str(home.root), "verify", "--json"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert finding["problem"] == "unreachable" and SECRET not in finding["action"]
