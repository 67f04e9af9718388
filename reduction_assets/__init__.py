"""reduction_assets: a Dagster asset graph from raw CCD frames to calibrated, archived products."""

__version__ = "0.1.0"
