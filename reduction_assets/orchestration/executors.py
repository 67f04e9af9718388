"""Steps on Celery workers over RabbitMQ: dagster-celery's step executor, chosen by
``REDUCTION_EXECUTOR=celery``, and the app its workers run.

A run (launched by the daemon in the code server's environment) sends each step to the ``dagster``
queue of the broker at ``REDUCTION_CELERY_BROKER_URL``; any worker started with

    celery -A reduction_assets.orchestration.executors worker -Q dagster --pool=threads --concurrency=1

on any machine that shares the instance (PostgreSQL), the catalog (PostgreSQL) and the stores takes
it. Results come back over the broker (``rpc://``). The URL holds the broker's password: it is read
from the environment by the run and by each worker, never written into run configs, logs or
errors.
"""

import functools
import os

import kombu
from dagster import Failure, executor, multiple_process_executor_requirements
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from reduction_assets.orchestration.dagster_internals import RetryMode
from reduction_assets.tasks.notify import redacted

BROKER_URL_ENV = "REDUCTION_CELERY_BROKER_URL"  # amqp://user:password@host:5672/vhost
RESULT_BACKEND = "rpc://"  # results over the broker itself: nothing else to run
BROKER_CHECK_SECONDS = 10.0
# A step's message is acknowledged only when the step has ended, so that a worker killed in the
# middle of a step (a lost machine, the OOM killer) leaves it on the queue for another worker,
# instead of a run waiting for a result that never comes. Steps are idempotent (each redoes what its
# catalog rows do not show as done), so running one again is safe. One message at a time per worker.
WORKER_SETTINGS = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def broker_url() -> str:
    """The broker's URL from ``REDUCTION_CELERY_BROKER_URL`` (a clear error when it is unset)."""
    url = os.environ.get(BROKER_URL_ENV, "").strip()
    if not url:
        raise RuntimeError(
            f"{BROKER_URL_ENV} is not set: the Celery executor and its workers need the broker's "
            "URL (amqp://user:password@host:5672/vhost)"
        )
    return url


def check_broker(url: str, timeout: float = BROKER_CHECK_SECONDS) -> None:
    """Raise ``ConnectionError`` naming the broker (without credentials) unless it accepts a
    connection within ``timeout`` seconds."""
    connection = kombu.Connection(url, connect_timeout=timeout)
    shown = connection.as_uri()  # the password masked
    try:
        with connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5, interval_step=1.0)
    except Exception as err:  # kombu raises several kinds; all mean "cannot reach it"
        raise ConnectionError(
            f"the Celery broker {shown} is unreachable: {redacted(str(err), url)}"
        ) from None


class CheckedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor that first checks the broker, so that an unreachable RabbitMQ
    fails the run at its start with one clear line (the daemon's run retries then launch it
    again) instead of after a step was half sent."""

    def execute(self, plan_context, execution_plan):
        try:
            check_broker(self.broker)
        except ConnectionError as err:
            raise Failure(str(err)) from None
        return super().execute(plan_context, execution_plan)


@executor(name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
def reduction_celery_executor(init_context) -> CheckedCeleryExecutor:
    """Each step as a Celery task on the ``dagster`` queue; ``broker`` should come from
    ``{"env": "REDUCTION_CELERY_BROKER_URL"}`` so that the password stays out of run configs."""
    config = init_context.executor_config
    return CheckedCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )


celery_executor = reduction_celery_executor.configured(
    {"broker": {"env": BROKER_URL_ENV}, "backend": RESULT_BACKEND, "config_source": WORKER_SETTINGS},
    name="celery",
)


@functools.cache
def worker_app():
    """The Celery app of a worker: dagster-celery's tasks on the broker of the environment."""
    settings = CheckedCeleryExecutor(
        retries=RetryMode(RetryMode.DISABLED),
        broker=broker_url(),
        backend=RESULT_BACKEND,
        config_source=WORKER_SETTINGS,
    )
    app = make_app(settings.app_args())
    create_task(app)
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


# `celery -A reduction_assets.orchestration.executors worker` finds `app` here; only a worker builds it.
def __getattr__(name: str):
    if name in ("app", "celery"):
        return worker_app()
    raise AttributeError(name)
