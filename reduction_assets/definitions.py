"""The Definitions of reduction_assets: assets, sensors and resources.

Environment switching happens here and only here. ``defs`` is a function, so Dagster builds the
definitions when it loads the code location, not when this module is imported; the deployment
(``REDUCTION_DEPLOYMENT``: ``embedded`` by default, or ``production``) chooses how the resources
find their settings, always through ``EnvVar`` so the values never appear in the UI or the code.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from reduction_assets.assets.calibrations import master_bias, master_dark, master_flat
from reduction_assets.assets.raw import landing_rejects, raw_frames
from reduction_assets.assets.science import reduced_frames
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.sensors import calibration_sensor, landing_sensor

DEPLOYMENT_ENV = "REDUCTION_DEPLOYMENT"


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


def build_definitions(home: ReductionHomeResource | None = None) -> Definitions:
    """The definitions with a given home resource (tests and `process` pass their own)."""
    return Definitions(
        assets=[raw_frames, landing_rejects, master_bias, master_dark, master_flat, reduced_frames],
        sensors=[landing_sensor, calibration_sensor],
        resources={"home": home} if home is not None else resources_for("embedded"),
    )


def defs() -> Definitions:
    """What Dagster loads (``-m reduction_assets.definitions -a defs``)."""
    deployment = os.environ.get(DEPLOYMENT_ENV, "embedded")
    return build_definitions(resources_for(deployment)["home"])
