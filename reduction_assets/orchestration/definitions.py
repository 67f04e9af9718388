"""The Definitions of reduction_assets: assets, jobs, sensors, resources and the executor.

Environment switching happens here and only here. ``defs`` is a function, so Dagster builds the
definitions when it loads the code location, not when this module is imported:

- ``REDUCTION_DEPLOYMENT`` (``embedded`` by default, or ``production``) chooses how the resources
  find their settings, always through ``EnvVar`` so the values never appear in the UI or the code;
- ``REDUCTION_ARCHIVE_STORE`` (``local`` by default, or ``s3``) chooses where archived files go;
  for ``s3`` the bucket comes from ``REDUCTION_ARCHIVE_BUCKET`` and the credentials from
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``EnvVar``), the endpoint of another
  S3-compatible service from ``REDUCTION_ARCHIVE_ENDPOINT_URL``, a key prefix from
  ``REDUCTION_ARCHIVE_PREFIX``; ``REDUCTION_BROKER_URL`` (an AMQP URL, through ``EnvVar``), when
  set, sends a message to the ``archive`` exchange for every archived record;
- ``REDUCTION_LANDING_STORE`` (``directory`` by default, or ``s3``) chooses where raw files arrive:
  landing/ alone, or also the objects under ``REDUCTION_LANDING_BUCKET`` and
  ``REDUCTION_LANDING_PREFIX`` (``REDUCTION_LANDING_ENDPOINT_URL`` for another S3-compatible
  service; the same AWS credentials), copied into landing/s3/ by the landing sensor;
- ``REDUCTION_ALERT_WEBHOOK_URL`` and ``REDUCTION_ALERT_SMTP_*`` (host, port, from, to, user,
  password, starttls; all through ``EnvVar``) add a webhook and e-mail to the log as the sinks of
  the run-failure and check-failure alerts (:mod:`reduction_assets.tasks.alerts`);
- ``REDUCTION_EXECUTOR`` (``in_process`` by default, ``multiprocess`` or ``celery``) chooses how a run
  executes its steps. A partition's steps run one after the other anyway (each needs the one before),
  so in process they cost only their work; ``multiprocess`` isolates steps in processes started from
  a preloaded forkserver; ``celery`` sends each step to Celery workers over RabbitMQ
  (``REDUCTION_CELERY_BROKER_URL``, :mod:`reduction_assets.orchestration.executors`). Memory-heavy steps are
  serialised by the ``stacking`` pool either way. Runs themselves go where dagster.yaml's run
  launcher puts them (Kubernetes jobs with dagster-k8s: deploy/helm).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from dagster import (
    BetaWarning,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    in_process_executor,
    multiprocess_executor,
    with_source_code_references,
)

from reduction_assets.orchestration.assets.archive import archive_records
from reduction_assets.orchestration.assets.calibrations import master_bias, master_dark, master_flat
from reduction_assets.orchestration.assets.quality import quality_metrics, quality_trends
from reduction_assets.orchestration.assets.raw import landing_rejects, raw_frames
from reduction_assets.orchestration.assets.science import reduced_frames
from reduction_assets.orchestration.assets.stacks import stacks
from reduction_assets.orchestration.jobs import ALL_JOBS
from reduction_assets.orchestration.resources import (
    AlertSinksResource,
    ArchiveStoreResource,
    LandingSourceResource,
    ReductionHomeResource,
    archive_resource,
    resources_from_environment,
)
from reduction_assets.orchestration.sensors import SENSORS

DEPLOYMENT_ENV = "REDUCTION_DEPLOYMENT"
EXECUTOR_ENV = "REDUCTION_EXECUTOR"
ASSETS = [
    raw_frames,
    landing_rejects,
    master_bias,
    master_dark,
    master_flat,
    reduced_frames,
    stacks,
    archive_records,
    quality_metrics,
    quality_trends,
]


def resources_for(deployment: str) -> dict[str, ReductionHomeResource]:
    """The resources of a deployment: ``embedded`` keeps the catalog in SQLite inside
    ``$REDUCTION_HOME``; ``production`` takes it from ``$REDUCTION_CATALOG_URL`` (PostgreSQL)."""
    if deployment == "embedded":
        return {"home": ReductionHomeResource(home=EnvVar("REDUCTION_HOME"))}
    if deployment == "production":
        return {
            "home": ReductionHomeResource(
                home=EnvVar("REDUCTION_HOME"), catalog_url=EnvVar("REDUCTION_CATALOG_URL")
            )
        }
    raise ValueError(f"{DEPLOYMENT_ENV}={deployment!r}: expected 'embedded' or 'production'")


def archive_for(kind: str, home: ReductionHomeResource) -> ArchiveStoreResource:
    """The archive store: ``local`` (``archive/`` in the home) or ``s3``; settings from the
    environment, secrets through ``EnvVar`` so they never show in the UI or in run configs."""
    return archive_resource(kind, home.home, lambda name, secret: EnvVar(name))


def executor_for(name: str) -> ExecutorDefinition:
    """``in_process`` (the default), ``multiprocess`` with a forkserver that preloads the package, or
    ``celery`` (steps on Celery workers)."""
    if name == "celery":
        from reduction_assets.orchestration.executors import celery_executor

        return celery_executor
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor.configured(
            {
                "start_method": {
                    "forkserver": {"preload_modules": ["reduction_assets.orchestration.definitions"]}
                }
            }
        )
    raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected 'in_process', 'multiprocess' or 'celery'")


def build_definitions(
    home: ReductionHomeResource | None = None,
    executor: ExecutorDefinition = in_process_executor,
    archive: ArchiveStoreResource | None = None,
    extra_jobs: Sequence = (),
    landing: LandingSourceResource | None = None,
    alerts: AlertSinksResource | None = None,
) -> Definitions:
    """The definitions with a given home resource (tests and `process` pass their own), archive
    store (the local one in that home by default) and, for commands that run a selection of their
    own in process, extra jobs."""
    home = home if home is not None else resources_for("embedded")["home"]
    with warnings.catch_warnings():
        # Beta in Dagster 1.13; a warning at every code-location load tells operators nothing.
        warnings.simplefilter("ignore", BetaWarning)
        assets = with_source_code_references(ASSETS)
    return Definitions(
        assets=assets,
        jobs=[*ALL_JOBS, *extra_jobs],
        sensors=list(SENSORS),
        resources={
            "home": home,
            "archive": archive or archive_for("local", home),
            "landing_source": landing or LandingSourceResource(),
            "alerts": alerts or AlertSinksResource(),
        },
        executor=executor,
    )


def defs() -> Definitions:
    """What Dagster loads (``-m reduction_assets.orchestration.definitions -a defs``)."""
    deployment = os.environ.get(DEPLOYMENT_ENV, "embedded")
    executor = executor_for(os.environ.get(EXECUTOR_ENV, "in_process"))
    return definitions_for(resources_for(deployment)["home"], executor)


def definitions_for(
    home: ReductionHomeResource, executor: ExecutorDefinition = in_process_executor, extra_jobs: Sequence = ()
) -> Definitions:
    """The definitions with the resources the environment configures (archive, landing source,
    alerts): what the code location, `process` and `reprocess --local` all run with."""
    configured = resources_from_environment(home.home, lambda name, secret: EnvVar(name))
    return build_definitions(
        home,
        executor,
        configured.archive,
        extra_jobs=extra_jobs,
        landing=configured.landing,
        alerts=configured.alerts,
    )
