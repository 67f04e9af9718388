"""The only names the package takes from Dagster's private modules (``dagster._*``), in one place.

Dagster makes no promise about ``dagster._core``: a release may move or rename these without notice.
Every other module imports them from here (reduction_assets_tests/test_dagster_internals.py fails on
a ``dagster._`` import anywhere else), so an upgrade of the Dagster family (the pins in setup.py)
re-checks this list, and the test checks that each name still has the members used.

``RetryMode`` (``dagster._core.execution.retries``)
    Used by ``orchestration/executors.py``: ``RetryMode.from_config(config["retries"])`` turns the
    Celery executor's ``retries`` config into the mode ``CeleryExecutor`` takes, and
    ``RetryMode(RetryMode.DISABLED)`` builds the executor settings a Celery worker's app is made
    from. On upgrade re-check: ``from_config`` still takes the ``{"enabled": {}}``/``{"disabled": {}}``
    selector of dagster-celery's ``CELERY_CONFIG`` and ``CeleryExecutor`` still takes ``retries=``
    (the executor also uses dagster-celery's ``CELERY_CONFIG``, ``CeleryExecutor``, ``make_app`` and
    ``create_*task``, undocumented module-level names of that library).

``BulkActionStatus`` (``dagster._core.execution.backfill``)
    Used by ``orchestration/runs.py`` (``status_report``, `reduction-assets status`):
    ``instance.get_backfills(status=BulkActionStatus.REQUESTED)`` lists the pending backfills and
    ``backfill.status.value`` is shown. On upgrade re-check: ``REQUESTED`` is still the status of a
    backfill the daemon has yet to finish, and ``get_backfills`` still filters by it.

``InstigatorStatus``, ``InstigatorType`` (``dagster._core.scheduler.instigation``)
    Used by ``orchestration/runs.py`` (``status_report``): ``instance.all_instigator_state(
    instigator_type=InstigatorType.SENSOR)`` reads the stored sensor states, and a sensor counts as
    started when its state is ``RUNNING`` or ``AUTOMATICALLY_RUNNING``, stopped when ``STOPPED``,
    on its code default otherwise (no stored state, ``DECLARED_IN_CODE``). On upgrade re-check:
    those members still exist and mean that, and no new status means "running".
"""

from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.execution.retries import RetryMode
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

__all__ = ["BulkActionStatus", "InstigatorStatus", "InstigatorType", "RetryMode"]
