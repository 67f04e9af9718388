"""Dagster resources: the installation's home folder, its catalog and its stores.

Every field is optional and resolved when a run uses it, never at import time: the definitions give
them through ``EnvVar`` (``REDUCTION_HOME``, ``REDUCTION_CATALOG_URL``), tests and `process` directly.
"""

import functools
import os
from dataclasses import dataclass

from dagster import ConfigurableResource
from pydantic import Field

from reduction_assets.catalog import Catalog
from reduction_assets.instruments import Registry, load_registry
from reduction_assets.storage import LocalStore, ObjectStore
from reduction_assets.support.home import Home, resolve_home
from reduction_assets.tasks.common import Stores


@functools.lru_cache(maxsize=8)
def _catalog(url: str) -> Catalog:
    catalog = Catalog(url)
    catalog.create()
    return catalog


class ReductionHomeResource(ConfigurableResource):
    """Where this installation keeps its state, and the handles on it."""

    home: str | None = Field(
        default=None, description="REDUCTION_HOME folder; default $REDUCTION_HOME or ~/reduction_home"
    )
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default $REDUCTION_CATALOG_URL or SQLite in the home",
    )
    settle_seconds: float = Field(
        default=5.0, description="a landing file must be unmodified this long before it is ingested"
    )

    def layout(self) -> Home:
        return resolve_home(self.home).ensure()

    def registry(self) -> Registry:
        """The instrument registry: the same one the partitions were generated from."""
        return load_registry()

    def catalog(self) -> Catalog:
        catalog = _catalog(self.catalog_url or self.layout().catalog_url())
        catalog.sync_instruments(self.registry())
        return catalog

    def raw_store(self) -> ObjectStore:
        return LocalStore(self.layout().raw)

    def product_store(self) -> ObjectStore:
        return LocalStore(self.layout().products)

    def quarantine_store(self) -> ObjectStore:
        return LocalStore(self.layout().quarantine)

    def stores(self) -> Stores:
        """The catalog and the raw and product stores, as the tasks take them."""
        return Stores(self.catalog(), self.raw_store(), self.product_store())


ARCHIVE_KINDS = ("local", "s3")
# The environment that configures the archive (production gives the secrets through EnvVar).
ARCHIVE_STORE_ENV, ARCHIVE_BUCKET_ENV = "REDUCTION_ARCHIVE_STORE", "REDUCTION_ARCHIVE_BUCKET"
ARCHIVE_PREFIX_ENV, ARCHIVE_ENDPOINT_ENV = "REDUCTION_ARCHIVE_PREFIX", "REDUCTION_ARCHIVE_ENDPOINT_URL"
BROKER_ENV = "REDUCTION_BROKER_URL"  # amqp://user:password@host:5672/vhost: archive messages


class S3Connection(ConfigurableResource):
    """A bucket and prefix of an S3-compatible service, reached through dagster-aws's S3 resource."""

    bucket: str | None = Field(default=None, description="S3 bucket")
    prefix: str = Field(default="", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint; None for AWS itself")
    region_name: str | None = Field(default=None)
    aws_access_key_id: str | None = Field(default=None)
    aws_secret_access_key: str | None = Field(default=None)
    max_attempts: int = Field(default=3, description="botocore's own attempts per request")

    def s3_store(self):
        """The :class:`~reduction_assets.storage.s3.S3Store` of this bucket and prefix."""
        from dagster_aws.s3 import S3Resource

        from reduction_assets.storage.s3 import S3Store

        client = S3Resource(
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            max_attempts=self.max_attempts,
        ).get_client()
        return S3Store(client, self.bucket or "", self.prefix)


class ArchiveStoreResource(S3Connection):
    """Where archived files go: ``local`` (``archive/`` in the home, the embedded default) or ``s3``
    (a bucket and prefix of any S3-compatible service, reached through dagster-aws's S3 resource).
    Production gives every field through ``EnvVar`` so that no secret is in the configuration."""

    kind: str = Field(default="local", description="local or s3")
    home: str | None = Field(default=None, description="REDUCTION_HOME, for the local archive")
    broker_url: str | None = Field(
        default=None, description="AMQP URL of the broker that hears of archived records; None: no messages"
    )
    exchange: str = Field(default="archive", description="the topic exchange messages go to")

    def store(self):
        """The archive's :class:`~reduction_assets.storage.ObjectStore`."""
        if self.kind == "local":
            return LocalStore(resolve_home(self.home).ensure().archive)
        if self.kind == "s3":
            return self.s3_store()
        raise ValueError(f"archive store kind {self.kind!r}: expected one of {', '.join(ARCHIVE_KINDS)}")


LANDING_KINDS = ("directory", "s3")
# Where arrivals come from: landing/ alone (the default), or also an S3 prefix mirrored into
# landing/s3/ (settings from the environment, secrets through EnvVar).
LANDING_STORE_ENV, LANDING_BUCKET_ENV = "REDUCTION_LANDING_STORE", "REDUCTION_LANDING_BUCKET"
LANDING_PREFIX_ENV, LANDING_ENDPOINT_ENV = "REDUCTION_LANDING_PREFIX", "REDUCTION_LANDING_ENDPOINT_URL"


class LandingSourceResource(S3Connection):
    """Where raw files arrive: ``directory`` (landing/ only) or ``s3``: objects under a bucket's prefix
    are copied, once settled, into ``landing/s3/`` and from there follow landing/'s rules."""

    kind: str = Field(default="directory", description="directory or s3")

    def store(self):
        """The S3 store to mirror, or None when arrivals come only through landing/."""
        if self.kind == "directory":
            return None
        if self.kind == "s3":
            return self.s3_store()
        raise ValueError(f"landing source kind {self.kind!r}: expected one of {', '.join(LANDING_KINDS)}")


def _s3_settings(value, bucket_env: str, prefix_env: str, endpoint_env: str) -> dict:
    return {
        "bucket": value(bucket_env, True),
        "prefix": os.environ.get(prefix_env, ""),
        "endpoint_url": os.environ.get(endpoint_env) or None,
        "region_name": os.environ.get("AWS_DEFAULT_REGION") or None,
        "aws_access_key_id": value("AWS_ACCESS_KEY_ID", True),
        "aws_secret_access_key": value("AWS_SECRET_ACCESS_KEY", True),
    }


def landing_resource(kind: str, value) -> LandingSourceResource:
    """The landing source of ``kind``; ``value(name, secret)`` as for :func:`archive_resource`."""
    if kind == "directory":
        return LandingSourceResource(kind="directory")
    if kind == "s3":
        settings = _s3_settings(value, LANDING_BUCKET_ENV, LANDING_PREFIX_ENV, LANDING_ENDPOINT_ENV)
        return LandingSourceResource(kind="s3", **settings)
    raise ValueError(f"{LANDING_STORE_ENV}={kind!r}: expected one of {', '.join(LANDING_KINDS)}")


def archive_resource(kind: str, home: str | None, value) -> ArchiveStoreResource:
    """The archive store of ``kind`` (``local`` or ``s3``); ``value(name, secret)`` gives each
    setting from the environment: ``EnvVar`` for Dagster's definitions (never shown), the plain
    value for the command line. Optional settings that are unset stay None."""
    broker = {"broker_url": value(BROKER_ENV, True)} if os.environ.get(BROKER_ENV) else {}
    if kind == "local":
        return ArchiveStoreResource(kind="local", home=home, **broker)
    if kind == "s3":
        settings = _s3_settings(value, ARCHIVE_BUCKET_ENV, ARCHIVE_PREFIX_ENV, ARCHIVE_ENDPOINT_ENV)
        return ArchiveStoreResource(kind="s3", home=home, **settings, **broker)
    raise ValueError(f"{ARCHIVE_STORE_ENV}={kind!r}: expected one of {', '.join(ARCHIVE_KINDS)}")


class AlertSinksResource(ConfigurableResource):
    """Where alerts go besides the log: an HTTP webhook and e-mail over SMTP (each None: not
    configured). Production gives every field through ``EnvVar`` (``REDUCTION_ALERT_*``)."""

    webhook_url: str | None = Field(default=None, description="JSON POST of each alert")
    host: str | None = Field(default=None, description="SMTP server")
    port: str | None = Field(default=None, description="SMTP port (25)")
    sender: str | None = Field(default=None, description="From: of the e-mail")
    recipients: str | None = Field(default=None, description="To:, comma-separated")
    user: str | None = Field(default=None, description="SMTP login")
    password: str | None = Field(default=None, description="SMTP password")
    starttls: str | None = Field(default=None, description="1: STARTTLS before the login")

    def sinks(self, log) -> list:
        """The log sink and the configured ones (:mod:`reduction_assets.tasks.alerts`)."""
        from reduction_assets.tasks.alerts import sinks_from_settings

        return sinks_from_settings(self.model_dump(), log)


def alerts_resource(value) -> AlertSinksResource:
    """The alert sinks configured in the environment (``REDUCTION_ALERT_WEBHOOK_URL`` and
    ``REDUCTION_ALERT_SMTP_*``); ``value(name, secret)`` as for :func:`archive_resource`."""
    from reduction_assets.tasks.alerts import SMTP_ENV, WEBHOOK_ENV

    names = {"webhook_url": WEBHOOK_ENV, **SMTP_ENV}
    secret = {"webhook_url", "user", "password"}
    return AlertSinksResource(
        **{field: value(env, field in secret) for field, env in names.items() if os.environ.get(env)}
    )


@dataclass(frozen=True)
class ConfiguredResources:
    """The resources the environment chooses: where archived files go, where raw files also arrive
    from, and where alerts are sent. Every entry point (the code location, `process`,
    `reprocess --local`, the archive commands) takes them from :func:`resources_from_environment`,
    so a setting cannot hold for one and not for another."""

    archive: ArchiveStoreResource
    landing: LandingSourceResource
    alerts: AlertSinksResource


def resources_from_environment(home, value) -> ConfiguredResources:
    """The resources that ``REDUCTION_ARCHIVE_STORE``, ``REDUCTION_LANDING_STORE`` and the alert
    settings choose, for ``home`` (a path, or ``EnvVar("REDUCTION_HOME")``); ``value(name, secret)``
    gives each setting: ``EnvVar`` inside Dagster (resolved when a run starts, never shown), the
    plain value for commands that use a store themselves."""
    return ConfiguredResources(
        archive=archive_resource(os.environ.get(ARCHIVE_STORE_ENV, "local"), home, value),
        landing=landing_resource(os.environ.get(LANDING_STORE_ENV, "directory"), value),
        alerts=alerts_resource(value),
    )
