"""Dagster's private names (``dagster._*``) come through one module, still exist with the members the
package uses, and were checked against the Dagster release setup.py pins."""

import ast
import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reduction_assets"
INTERNALS = PACKAGE / "orchestration" / "dagster_internals.py"


def private_dagster_imports(path: Path) -> list[str]:
    """The ``dagster._*`` modules a file imports, at any depth (function-level imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "dagster":  # `from dagster import _core`
                names += [f"dagster.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names]
    return [entry for entry in found if entry.split(": ", 1)[1].startswith("dagster._")]


def test_only_dagster_internals_imports_private_dagster_modules():
    offending = [
        entry
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != INTERNALS
        for entry in private_dagster_imports(path)
    ]
    assert offending == [], "import these from reduction_assets.orchestration.dagster_internals"
    assert private_dagster_imports(INTERNALS)  # the walk does see its imports


def test_the_re_exported_names_still_have_the_members_the_package_uses():
    from reduction_assets.orchestration import dagster_internals
    from reduction_assets.orchestration.dagster_internals import (
        BulkActionStatus,
        InstigatorStatus,
        InstigatorType,
        RetryMode,
    )

    assert sorted(dagster_internals.__all__) == [
        "BulkActionStatus",
        "InstigatorStatus",
        "InstigatorType",
        "RetryMode",
    ]
    # executors.py: the Celery executor's `retries` selector, and a worker's app without retries.
    assert RetryMode.from_config({"disabled": {}}) is RetryMode.DISABLED
    assert RetryMode.from_config({"enabled": {}}) is RetryMode.ENABLED
    assert RetryMode(RetryMode.DISABLED) is RetryMode.DISABLED
    # runs.py (status_report): pending backfills by status, and stored sensor states.
    assert BulkActionStatus.REQUESTED.value == "REQUESTED"
    assert InstigatorType.SENSOR.value == "SENSOR"
    # Started: RUNNING or AUTOMATICALLY_RUNNING; stopped: STOPPED; anything else: the code's default.
    # A new status that means "running" would be shown as the sensor's default: look at it.
    assert {status.name for status in InstigatorStatus} == {
        "RUNNING",
        "AUTOMATICALLY_RUNNING",
        "STOPPED",
        "DECLARED_IN_CODE",
    }


def test_the_re_exported_names_are_what_executors_and_runs_use():
    """Every dagster_internals name executors.py and runs.py use is one the test above checks."""
    used = set()
    for name in ("executors.py", "runs.py"):
        tree = ast.parse((PACKAGE / "orchestration" / name).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "reduction_assets.orchestration.dagster_internals"
            ):
                used.update(alias.name for alias in node.names)
    assert used == {"BulkActionStatus", "InstigatorStatus", "InstigatorType", "RetryMode"}


def test_the_installed_dagster_is_the_release_setup_py_pins():
    setup = (ROOT / "setup.py").read_text()
    (pinned,) = re.findall(r'^DAGSTER = "([^"]+)"', setup, re.M)
    installed = version("dagster")
    assert installed == pinned, (
        f"dagster {installed} is installed but setup.py pins {pinned}. On an upgrade of the Dagster "
        "family, re-check every name in reduction_assets/orchestration/dagster_internals.py (RetryMode "
        "for the Celery executor; BulkActionStatus, InstigatorStatus, InstigatorType for "
        "`reduction-assets status`) against the new release, as its docstring lists; then move the "
        "Dagster family's pins in setup.py together and regenerate deploy/constraints.txt (make lock)."
    )
