"""The S3 store against a real S3 protocol: moto's standalone server on 127.0.0.1, over HTTP."""

import hashlib

import pytest

from reduction_assets.storage import Integrity, MissingObject, StoreError, write_object
from reduction_assets.storage.s3 import S3Store
from reduction_assets_tests.s3 import SECRET, MotoS3


@pytest.fixture(scope="module")
def moto_s3():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def store(moto_s3, request) -> S3Store:
    bucket = "archive-" + hashlib.md5(request.node.name.encode(), usedforsecurity=False).hexdigest()[:12]
    made = moto_s3.resource(bucket).store()
    made.client.create_bucket(Bucket=bucket)
    made._call.retry.wait = lambda _state: 0.01  # no waiting between attempts in tests
    return made


def test_a_file_goes_up_and_comes_back_with_equal_md5(store, tmp_path):
    source = tmp_path / "frame.fits"
    source.write_bytes(bytes(range(256)) * 5000)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    store.put_file(source, "lcosim/2026-11-20/frame.fits", sha)
    with store.open("lcosim/2026-11-20/frame.fits") as stream:
        back = stream.read()
    assert (
        hashlib.md5(back, usedforsecurity=False).hexdigest()
        == hashlib.md5(source.read_bytes(), usedforsecurity=False).hexdigest()
    )
    assert (
        store.head("lcosim/2026-11-20/frame.fits")["md5"]
        == hashlib.md5(back, usedforsecurity=False).hexdigest()
    )
    assert store.check("lcosim/2026-11-20/frame.fits", sha) is Integrity.OK
    assert store.verify_content("lcosim/2026-11-20/frame.fits") is Integrity.OK
    assert list(store.keys()) == ["lcosim/2026-11-20/frame.fits"]
    assert store.describe("lcosim/2026-11-20/frame.fits").endswith(
        "/observatory/lcosim/2026-11-20/frame.fits"
    )


def test_staged_objects_appear_only_when_published(store):
    staged = store.stage("products/x.fits", lambda stream: stream.write(b"content"))
    assert not store.exists("products/x.fits")
    staged.publish()
    staged.discard()
    assert store.check("products/x.fits", hashlib.sha256(b"content").hexdigest()) is Integrity.OK
    assert (
        write_object(store, "products/y.fits", lambda stream: stream.write(b"y"))
        == hashlib.sha256(b"y").hexdigest()
    )


def test_other_content_under_a_key_is_replaced_only_when_asked(store, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    store.put_file(first, "k.fits", hashlib.sha256(b"one").hexdigest())
    with pytest.raises(StoreError, match="holds other content"):
        store.put_file(second, "k.fits", hashlib.sha256(b"two").hexdigest())
    store.put_file(second, "k.fits", hashlib.sha256(b"two").hexdigest(), replace=True)
    assert store.check("k.fits", hashlib.sha256(b"two").hexdigest()) is Integrity.OK


@pytest.mark.parametrize(
    "key", ["../escape.fits", "/absolute.fits", "a/../../b.fits", "a\\b.fits", "a//b", ""]
)
def test_a_key_that_would_escape_the_prefix_is_refused(store, key):
    with pytest.raises(StoreError, match="not a plain relative path"):
        store.exists(key)


def test_a_body_damaged_on_the_way_is_refused_by_the_service(store, tmp_path, monkeypatch):
    import reduction_assets.storage.s3 as s3

    source = tmp_path / "a"
    source.write_bytes(b"the real content")
    monkeypatch.setattr(s3, "_digests", lambda path: (hashlib.sha256(b"x").hexdigest(), "0" * 32))
    with pytest.raises(StoreError, match="arrived damaged"):
        store.put_verified(source, "damaged.fits")
    assert not store.exists("damaged.fits")


def test_a_missing_object_and_a_missing_bucket_say_so_without_any_secret(moto_s3):
    store = moto_s3.resource("no-such-bucket").store()
    store._call.retry.wait = lambda _state: 0.01
    with pytest.raises(StoreError) as raised:
        list(store.keys())
    assert "no-such-bucket" in str(raised.value) and SECRET not in str(raised.value)
    assert SECRET not in repr(raised.value.__cause__) and raised.value.__cause__ is None


def test_an_unreachable_service_is_retried_then_reported():
    store = MotoS3().resource("archive").store()  # a server that was never started: nothing listens
    attempts = []
    store._call.retry.wait = lambda _state: 0.01
    store._call.retry.before = lambda state: attempts.append(state.attempt_number)
    with pytest.raises(StoreError, match="EndpointConnectionError") as raised:
        store.exists("x.fits")
    assert len(attempts) == 5 and SECRET not in str(raised.value)


def test_opening_a_missing_object_raises_missing_object(store):
    with pytest.raises(MissingObject, match="does not exist"), store.open("nothing.fits"):
        pass


def test_wrong_credentials_give_a_clear_error_without_the_secret(moto_s3, tmp_path):
    from moto.core.authorization import enable_iam_authentication

    store = moto_s3.resource("any-bucket").store()  # AKIDEXAMPLE is no key the service knows
    source = tmp_path / "a.fits"
    source.write_bytes(b"content")
    with enable_iam_authentication(), pytest.raises(StoreError) as raised:
        store.put_file(source, "a.fits", hashlib.sha256(b"content").hexdigest())
    message = str(raised.value)
    assert "check the credentials" in message and "s3://any-bucket/observatory/a.fits" in message
    assert SECRET not in message and "AKIDEXAMPLE" not in message
