"""Thin Dagster assets, one module per family."""
