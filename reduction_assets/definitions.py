"""The Definitions object: assets, sensors and resources of reduction_assets."""

from __future__ import annotations

from dagster import Definitions

from reduction_assets.assets.calibrations import master_bias, master_dark, master_flat
from reduction_assets.assets.raw import landing_rejects, raw_frames
from reduction_assets.assets.science import reduced_frames
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.sensors import calibration_sensor, landing_sensor


def build_definitions(home: ReductionHomeResource | None = None) -> Definitions:
    return Definitions(
        assets=[raw_frames, landing_rejects, master_bias, master_dark, master_flat, reduced_frames],
        sensors=[landing_sensor, calibration_sensor],
        resources={"home": home or ReductionHomeResource()},
    )


defs = build_definitions()
