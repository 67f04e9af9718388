"""Thin Dagster assets, one module per family: raw, calibrations, science."""

import warnings

from dagster import BetaWarning

# backfill_policy is beta in Dagster 1.13 and checked for this use (the README's backfill sizing);
# a warning at every code-location load tells operators nothing they can act on.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=BetaWarning)
