"""A real S3 protocol for tests: moto's standalone server on 127.0.0.1, stopped and started at will."""

import socket

from reduction_assets.orchestration.resources import ArchiveStoreResource

SECRET = "s3cr3t-never-shown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """moto's ThreadedMotoServer on a fixed port; its buckets live in this process, so they survive
    a stop and a start (a service outage, not a data loss)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._make = ThreadedMotoServer
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> "MotoS3":
        self._server = self._make(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def resource(self, bucket: str, prefix: str = "observatory/") -> ArchiveStoreResource:
        return ArchiveStoreResource(
            kind="s3",
            bucket=bucket,
            prefix=prefix,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key=SECRET,
            max_attempts=1,
        )
