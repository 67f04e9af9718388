"""Pure science functions: calibration steps and master building. No Dagster, no catalog."""
