"""The named jobs of the graph, one per kind of work, so that runs say what they do in the UI.

Every partitioned job runs several partitions per run in backfills (see the README's backfill
sizing); sensors and `process` launch them one partition at a time.
"""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

MASTERS = ("master_bias", "master_dark", "master_flat")
# The partitioned assets of a night, in graph order: what a night's run and a backfill materialize.
NIGHT_ASSETS = ("raw_frames", *MASTERS, "reduced_frames", "stacks", "archive_records", "quality_metrics")

# Everything a night's partition needs: ingest, stack the masters, reduce the science frames, co-add them.
PROCESS_NIGHT = "process_night"
# Masters marked stale (damaged files) and the frames made with them.
REBUILD_MASTERS = "rebuild_masters"
# Science frames only (nearer masters appeared, or their products were marked stale).
REDUCE_FRAMES = "reduce_frames"
# Landing files that could not be routed to any partition.
QUARANTINE_REJECTS = "quarantine_rejects"
# An instrument's metric trends, redrawn after its nights' quality metrics changed.
UPDATE_QUALITY_TRENDS = "update_quality_trends"

process_night = define_asset_job(
    PROCESS_NIGHT,
    selection=AssetSelection.assets(*NIGHT_ASSETS),
    description="Ingest a night's landing files, stack its masters, reduce and co-add its science "
    "frames, archive what is new, measure its quality.",
)
rebuild_masters = define_asset_job(
    REBUILD_MASTERS,
    selection=AssetSelection.assets(
        *MASTERS, "reduced_frames", "stacks", "archive_records", "quality_metrics"
    ),
    description="Rebuild a night's masters, reduce its science frames again, redo stacks that changed.",
)
reduce_frames = define_asset_job(
    REDUCE_FRAMES,
    selection=AssetSelection.assets("reduced_frames", "stacks", "archive_records", "quality_metrics"),
    description="Reduce a night's science frames again with the best masters now available, and restack.",
)
quarantine_rejects = define_asset_job(
    QUARANTINE_REJECTS,
    selection=AssetSelection.assets("landing_rejects"),
    description="Validate landing files that fit no partition and quarantine them with a reason.",
)

update_quality_trends = define_asset_job(
    UPDATE_QUALITY_TRENDS,
    selection=AssetSelection.assets("quality_trends"),
    description="Redraw an instrument's quality trends (every metric across nights).",
)

ALL_JOBS = [process_night, rebuild_masters, reduce_frames, quarantine_rejects, update_quality_trends]
