"""A content-verified store in an S3 bucket under a prefix (any S3-compatible service).

Objects are uploaded whole with ``put_object`` and a ``Content-MD5`` header, so the service refuses
a body that arrived damaged, and carry their SHA-256 and MD5 as object metadata (``check`` compares
those; ``verify_content`` reads the object back). An upload is atomic: there is never a partial
object under a key. Transient errors (connection lost, timeouts, throttling, 5xx) are retried with
exponential backoff (tenacity); permanent ones (credentials, permissions, missing bucket) raise
:class:`StoreError` at once. Messages name the bucket and key, never a credential.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from reduction_assets.storage.base import Integrity, MissingObject, StoreError, key_parts

_CHUNK = 1 << 20
SHA256_META, MD5_META = "sha256", "md5"
# S3 error codes worth another try: throttling and the service's own failures.
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "503", "500", "502", "504"}  # fmt: skip
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# What an operator should look at, per S3 error code (HEAD requests give only the HTTP status).
_HINTS = {
    "403": "access denied: check the credentials and the bucket's policy",
    "AccessDenied": "access denied: check the credentials and the bucket's policy",
    "InvalidAccessKeyId": "the access key id is unknown to the service: check the credentials",
    "SignatureDoesNotMatch": "the secret access key is wrong: check the credentials",
    "NoSuchBucket": "the bucket does not exist",
}
ATTEMPTS = 5


def is_transient(error: BaseException) -> bool:
    """Whether an S3 call that raised ``error`` may succeed if tried again."""
    if isinstance(error, (EndpointConnectionError, BotoConnectionError, ReadTimeoutError)):
        return True
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code")) in _TRANSIENT_CODES
    return False


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _digests(path: Path) -> tuple[str, str]:
    """SHA-256 (hex) and MD5 (hex) of a local file."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


@dataclass(frozen=True)
class S3Entry:
    key: str
    size: int
    modified: dt.datetime  # aware, UTC


class S3Store:
    """Objects under ``s3://<bucket>/<prefix>``; ``client`` is a boto3 S3 client (from dagster-aws's
    ``S3Resource.get_client()``); ``retry_wait`` scales the backoff (seconds; tests shorten it)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, retry_wait: float = 1.0):
        if not bucket:
            raise StoreError("an S3 store needs a bucket name")
        self.client = client
        self.bucket = bucket
        self.prefix = "/".join(key_parts(prefix.strip("/"))) + "/" if prefix.strip("/") else ""
        self._call = retry(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=retry_wait, max=30 * retry_wait),
            stop=stop_after_attempt(ATTEMPTS),
            reraise=True,
        )(self._call_once)

    # -- plumbing -----------------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        return self.prefix + "/".join(key_parts(key))

    def _call_once(self, operation: str, **arguments: Any) -> Any:
        return getattr(self.client, operation)(**arguments)

    def _do(self, operation: str, key: str | None = None, **arguments: Any) -> Any:
        """Run an S3 call with retries; permanent or exhausted failures become StoreError."""
        where = self.describe(key) if key is not None else f"s3://{self.bucket}/{self.prefix}"
        try:
            return self._call(operation, Bucket=self.bucket, **arguments)
        except ClientError as err:
            if _code(err) in _MISSING_CODES:
                raise MissingObject(f"{where} does not exist") from None
            code = _code(err) or "error"
            hint = f" ({_HINTS[code]})" if code in _HINTS else ""
            raise StoreError(f"S3 {operation} of {where} failed: {code}{hint}") from None
        except BotoCoreError as err:
            raise StoreError(f"S3 {operation} of {where} failed: {type(err).__name__}") from None

    # -- the ObjectStore interface ------------------------------------------------------------

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata (``sha256``, ``md5``) and size, or None when it does not exist."""
        try:
            response = self._do("head_object", key, Key=self._object_key(key))
        except MissingObject:
            return None
        return {**response.get("Metadata", {}), "size": response.get("ContentLength")}

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def check(self, key: str, checksum: str | None) -> Integrity:
        found = self.head(key)
        if found is None:
            return Integrity.MISSING
        return Integrity.OK if found.get(SHA256_META) == checksum else Integrity.MISMATCH

    def check_since(self, key: str, checksum: str | None, recorded_at: dt.datetime) -> Integrity:
        """:meth:`check`: the object's recorded SHA-256 is compared, which costs one HEAD request."""
        return self.check(key, checksum)

    def verify_content(self, key: str) -> Integrity:
        """Read the object back and compare its content with the checksums stored with it."""
        found = self.head(key)
        if found is None:
            return Integrity.MISSING
        sha = hashlib.sha256()
        with self.open(key) as stream:
            while chunk := stream.read(_CHUNK):
                sha.update(chunk)
        return Integrity.OK if sha.hexdigest() == found.get(SHA256_META) else Integrity.MISMATCH

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            response = self._do("get_object", key, Key=self._object_key(key))
            body = response["Body"]
            try:
                while chunk := body.read(_CHUNK):
                    spool.write(chunk)
            finally:
                body.close()
            spool.seek(0)
            yield spool  # type: ignore[misc]

    def put_file(self, source: Path, key: str, checksum: str, *, replace: bool = False) -> None:
        sha, md5 = _digests(Path(source))
        if sha != checksum:
            raise StoreError(f"{source} does not match its checksum: not stored as {self.describe(key)}")
        found = self.head(key)
        if found is not None and found.get(SHA256_META) == sha:
            return
        if found is not None and not replace:
            raise StoreError(f"{self.describe(key)} holds other content")
        self._upload(Path(source), key, sha, md5)

    def put_verified(self, source: Path, key: str) -> tuple[str, str]:
        """Upload a local file (replacing what the key holds); returns its SHA-256 and MD5."""
        sha, md5 = _digests(Path(source))
        self._upload(Path(source), key, sha, md5)
        return sha, md5

    def _upload(self, source: Path, key: str, sha: str, md5: str) -> None:
        with open(source, "rb") as body:
            response = self._do(
                "put_object",
                key,
                Key=self._object_key(key),
                Body=body,
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                Metadata={SHA256_META: sha, MD5_META: md5},
            )
        # A single-part object's ETag is the MD5 of what the service stored: a second check, for
        # services that do not verify Content-MD5 themselves.
        etag = str(response.get("ETag", "")).strip('"')
        if etag and "-" not in etag and etag != md5:
            self._do("delete_object", key, Key=self._object_key(key))
            raise StoreError(f"{self.describe(key)} arrived damaged (MD5 {etag}, sent {md5}); removed")
        found = self.head(key)
        if found is None or found.get(SHA256_META) != sha:
            raise StoreError(f"{self.describe(key)} did not keep what was uploaded")

    def stage(self, key: str, write: Callable[[BinaryIO], None]) -> S3StagedObject:
        self._object_key(key)  # refuse a bad key before writing anything
        handle = tempfile.NamedTemporaryFile(prefix="s3-stage-", delete=False)  # noqa: SIM115
        path = Path(handle.name)
        try:
            with handle:
                write(handle)
            sha, md5 = _digests(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return S3StagedObject(self, key, sha, md5, path)

    def keys(self) -> Iterator[str]:
        return (entry.key for entry in self.entries())

    def entries(self) -> Iterator[S3Entry]:
        """Every object under the prefix: key (relative to the prefix), size and last modification."""
        token = None
        while True:
            arguments = {"Prefix": self.prefix, **({"ContinuationToken": token} if token else {})}
            page = self._do("list_objects_v2", None, **arguments)
            for item in page.get("Contents", []):
                yield S3Entry(item["Key"][len(self.prefix) :], int(item["Size"]), item["LastModified"])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def download(self, key: str, target: Path) -> None:
        """Copy an object into a local file (written whole, then renamed into place)."""
        partial = target.with_name(f".{target.name}.part")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            body = self._do("get_object", key, Key=self._object_key(key))["Body"]
            with open(partial, "wb") as handle:
                while chunk := body.read(_CHUNK):
                    handle.write(chunk)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def leftovers(self, older_than_seconds: float = 0.0) -> Iterator[str]:
        """None: an S3 object appears whole or not at all (uploads are single requests)."""
        return iter(())

    def remove(self, key: str) -> None:
        self._do("delete_object", key, Key=self._object_key(key))


class S3StagedObject:
    """A local temporary file, hashed, uploaded on publish."""

    def __init__(self, store: S3Store, key: str, checksum: str, md5: str, path: Path):
        self.store, self.key, self.checksum, self.md5, self._path = store, key, checksum, md5, path

    def publish(self) -> None:
        self.store._upload(self._path, self.key, self.checksum, self.md5)

    def discard(self) -> None:
        self._path.unlink(missing_ok=True)
