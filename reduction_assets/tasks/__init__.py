"""Dagster-free work per asset family: what a step does between reading its inputs and
recording its products (ingest, masters, science, stacks, archive, quality, ...)."""
