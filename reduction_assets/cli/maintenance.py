"""Keeping a home healthy: `migrate`, `verify`, `prune-runs`, `status`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from reduction_assets.cli.common import EXIT_OK, age, archive_store, open_catalog, table
from reduction_assets.support.home import resolve_home


def cmd_migrate(args) -> int:
    from reduction_assets.catalog import Catalog, safe_url

    home = resolve_home(args.home).ensure()
    catalog = Catalog(home.catalog_url())
    try:
        before, after = catalog.upgrade()
    finally:
        catalog.dispose()
    where = safe_url(home.catalog_url())
    if before == after:
        print(f"catalog {where}: schema {after} is current, nothing to do")
    else:
        print(f"catalog {where}: schema upgraded from {before or 'nothing'} to {after}")
    return 0


def cmd_verify(args) -> int:
    from tqdm import tqdm

    from reduction_assets.support.home import HomeBusy
    from reduction_assets.tasks.verify import verify_home

    home = resolve_home(args.home).ensure()
    catalog = open_catalog(home)
    try:
        with home.lock(wait_seconds=args.wait):
            report = verify_home(
                home,
                catalog,
                repair=args.repair,
                progress=lambda items: tqdm(items, desc="verify", unit="file", disable=args.json or None),
                archive=archive_store(home).store(),
            )
    except HomeBusy as busy:
        print(f"verify: {busy}; try again later or pass --wait SECONDS", file=sys.stderr)
        return 3
    rows = [
        {"store": f.store, "problem": f.problem, "key": f.key, "action": f.action} for f in report.findings
    ]
    if args.json:
        print(json.dumps({"checked": report.checked, "findings": rows}, indent=2))
    else:
        if rows:
            print(table(rows, ["store", "problem", "key", "action"]))
        print(
            f"{report.checked} stored files checked, {len(report.findings)} findings, "
            f"{len(report.unrepaired)} problems left"
            + ("" if args.repair or not report.unrepaired else " (--repair acts on them)")
        )
    return 1 if report.unrepaired else 0


def cmd_prune_runs(args) -> int:
    from reduction_assets.orchestration.process import instance_for
    from reduction_assets.orchestration.runs import prune_runs

    if args.older_than_days < 1:
        print("prune-runs: --older-than-days must be at least 1", file=sys.stderr)
        return 2
    home = resolve_home(args.home)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.older_than_days)
    instance = instance_for(home)
    try:
        report = prune_runs(instance, before, dry_run=args.dry_run)
    finally:
        instance.dispose()
    verb = "would delete" if args.dry_run else "deleted"
    if args.json:
        document = {
            "dry_run": args.dry_run,
            "before": before.isoformat(),
            "runs": report.runs,
            "compute_logs": len(report.compute_logs),
            "kept_failed": report.kept_failed,
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            f"{verb} {len(report.runs)} superseded failed runs and the step logs of "
            f"{len(report.compute_logs)} runs older than {args.older_than_days} days; "
            f"{report.kept_failed} failed runs kept (nothing succeeded after them)"
        )
    return 0


def cmd_status(args) -> int:
    from reduction_assets.orchestration.process import instance_for
    from reduction_assets.orchestration.runs import status_report
    from reduction_assets.orchestration.sensors import sensors_running_by_default

    home = resolve_home(args.home).ensure()
    defaults = sensors_running_by_default()
    instance = instance_for(home)
    try:
        report = status_report(instance, defaults, failed_days=args.days)
    finally:
        instance.dispose()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return EXIT_OK
    for section in ("running", "queued", "failed"):
        rows = [{**row, "age": age(row["age_seconds"])} for row in report[section]]
        title = f"{section} runs" + (
            f" (last {args.days:g} days, not succeeded since)" if section == "failed" else ""
        )
        print(f"{title}: {len(rows)}")
        if rows:
            print(table(rows, ["run_id", "job", "partition", "status", "age", "backfill"]))
    print(f"pending backfills: {len(report['backfills'])}")
    if report["backfills"]:
        rows = [{**row, "age": age(row["age_seconds"])} for row in report["backfills"]]
        print(table(rows, ["backfill_id", "status", "age", "title"]))
    print(table(report["sensors"], ["sensor", "running", "set_by"]))
    return EXIT_OK


def add_commands(sub, home: argparse.ArgumentParser) -> None:
    """`migrate`, `verify`, `prune-runs` and `status`, on the CLI's subcommand parser."""
    mig = sub.add_parser(
        "migrate", parents=[home], help="bring the catalog's schema to this release (alembic; idempotent)"
    )
    mig.set_defaults(func=cmd_migrate)

    prune = sub.add_parser(
        "prune-runs",
        parents=[home],
        help="delete superseded failed runs and old step logs (Dagster has no run retention setting)",
    )
    prune.add_argument("--older-than-days", type=int, default=90, help="age of what is deleted (default 90)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(func=cmd_prune_runs)

    ver = sub.add_parser(
        "verify", parents=[home], help="check every stored file against the catalog's checksums"
    )
    ver.add_argument(
        "--repair",
        action="store_true",
        help="restore raw and quarantine copies from landing/, mark damaged masters and "
        "products for rebuilding, remove leftover temporary files",
    )
    ver.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a `process` working on the same home",
    )
    ver.add_argument("--json", action="store_true")
    ver.set_defaults(func=cmd_verify)

    stat = sub.add_parser(
        "status", parents=[home], help="running, queued and failed runs, pending backfills, sensor states"
    )
    stat.add_argument("--days", type=float, default=7.0, help="failures of the last DAYS days (default 7)")
    stat.add_argument("--json", action="store_true")
    stat.set_defaults(func=cmd_status)
