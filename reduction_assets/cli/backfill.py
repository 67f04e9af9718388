"""Reprocessing a range of nights: `backfill` and `reprocess`."""

from __future__ import annotations

import argparse
import json
import sys

from reduction_assets.cli.common import EXIT_LEFT_UNDONE, EXIT_OK, echo_to, open_catalog, parse_date
from reduction_assets.support.home import resolve_home


def cmd_backfill(args) -> int:
    import math
    import time

    from tqdm import tqdm

    from reduction_assets.instruments import load_registry
    from reduction_assets.orchestration.partitions import PARTITIONS_PER_BACKFILL_RUN, night_in_range
    from reduction_assets.orchestration.reprocess import PlanRefused, check_instruments
    from reduction_assets.orchestration.webserver import (
        BACKFILL_DONE,
        NightRange,
        WebserverClient,
        WebserverError,
        shown_url,
    )

    try:
        instruments = check_instruments(args.instrument, load_registry().names)
    except PlanRefused as err:
        print(f"backfill: {err}", file=sys.stderr)
        return 2
    end = args.end or args.start
    if end < args.start:
        print("backfill: END is before START", file=sys.stderr)
        return 2
    for night in (args.start, end):
        if not night_in_range(night):
            print(f"backfill: night {night} has no partition (before the first night, or not over yet)",
                  file=sys.stderr)  # fmt: skip
            return 2
    ranges = [NightRange(name, args.start.isoformat(), end.isoformat()) for name in instruments]
    nights = (end - args.start).days + 1
    client = WebserverClient(args.url)
    try:
        backfill_id = client.launch_backfill(ranges, title=f"nights {args.start}..{end}")
    except WebserverError as err:
        print(f"backfill: {err}", file=sys.stderr)
        return 2
    runs = len(instruments) * math.ceil(nights / PARTITIONS_PER_BACKFILL_RUN)
    print(
        f"backfill {backfill_id}: {nights} nights x {len(instruments)} instruments "
        f"({', '.join(instruments)}), about {runs} runs; "
        f"{shown_url(client.url)}/runs/b/{backfill_id}?tab=partitions"
    )
    if not args.wait:
        return 0
    with tqdm(desc="backfill runs", unit="run", file=sys.stderr, disable=None) as bar:
        while True:
            try:
                state = client.backfill_status(backfill_id)
            except WebserverError as err:
                print(f"backfill: {err}", file=sys.stderr)
                return 2
            finished = sum(1 for run in state["runs"] if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"))
            bar.total = max(len(state["runs"]), runs)
            bar.n = finished
            bar.set_postfix_str(state["status"].lower())
            if state["status"] in BACKFILL_DONE:
                break
            time.sleep(2.0)
    failed = [run["runId"] for run in state["runs"] if run["status"] != "SUCCESS"]
    print(
        f"backfill {backfill_id}: {state['status']}, {len(state['runs'])} runs, {len(failed)} not successful"
    )
    return 0 if state["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failed else 1


def cmd_reprocess(args) -> int:
    from reduction_assets.catalog.raw import nights_with_data
    from reduction_assets.instruments import load_registry
    from reduction_assets.orchestration.reprocess import (
        PlanRefused,
        check_instruments,
        parse_assets,
        plan_reprocess,
        run_locally,
    )
    from reduction_assets.orchestration.webserver import (
        NightRange,
        WebserverClient,
        WebserverError,
        shown_url,
    )

    home = resolve_home(args.home).ensure()
    end = args.end or args.start
    try:
        instruments = check_instruments(args.instrument, load_registry().names)
        assets = parse_assets(args.assets)
        catalog = open_catalog(home)
        try:
            with catalog.session() as session:
                plan = plan_reprocess(
                    args.start,
                    end,
                    instruments,
                    assets,
                    lambda instrument, first, last: nights_with_data(session, instrument, first, last),
                )
        finally:
            catalog.dispose()
    except PlanRefused as err:
        print(f"reprocess: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        if args.json:
            print(json.dumps({**plan.as_dict(), "dry_run": True}, indent=2))
        else:
            print(
                f"would reprocess {plan.describe()}: about {plan.daemon_runs} daemon runs; nothing launched"
            )
        return 0
    if args.local:
        outcome = run_locally(home, plan, echo=echo_to(args.json))
        if args.json:
            print(json.dumps({**plan.as_dict(), "runs": outcome}, indent=2))
        failed = [run for run in outcome if not run["success"]]
        if not args.json:
            print(f"reprocessed {plan.describe()}: {len(outcome)} runs, {len(failed)} failed")
        return EXIT_LEFT_UNDONE if failed else EXIT_OK
    client = WebserverClient(args.url)
    ranges = [NightRange(s.instrument, s.first.isoformat(), s.last.isoformat()) for s in plan.spans]
    try:
        backfill_id = client.launch_backfill(ranges, plan.assets, title=f"reprocess {args.start}..{end}")
    except WebserverError as err:
        print(f"reprocess: {err} (--local runs it in this process when no daemon runs)", file=sys.stderr)
        return 2
    link = f"{shown_url(client.url)}/runs/b/{backfill_id}?tab=partitions"
    if args.json:
        print(json.dumps({**plan.as_dict(), "backfill_id": backfill_id, "url": link}, indent=2))
    else:
        print(f"backfill {backfill_id}: {plan.describe()}, about {plan.daemon_runs} runs; {link}")
    return 0


def add_commands(sub, home: argparse.ArgumentParser) -> None:
    """`backfill` and `reprocess`, on the CLI's subcommand parser."""
    back = sub.add_parser(
        "backfill",
        parents=[home],
        help="launch a daemon backfill of every partitioned asset over a range of nights",
        description="Launches, through the webserver, an asset backfill of exactly these nights for every "
        "partitioned asset (the UI's asset dialog would add the two weeks of later nights that depend on "
        "them through the calibration window). Up to 31 nights of one instrument run as one run.",
    )
    back.add_argument("start", type=parse_date, help="first night, YYYY-MM-DD")
    back.add_argument("end", type=parse_date, nargs="?", help="last night (default: START)")
    back.add_argument(
        "--instrument", action="append", help="only this instrument (repeatable; default: all registered)"
    )
    back.add_argument(
        "--url", help="the Dagster webserver (default: $DAGSTER_WEBSERVER_URL or http://127.0.0.1:3000)"
    )
    back.add_argument(
        "--wait", action="store_true", help="follow the backfill until it ends; exit 1 if a run failed"
    )
    back.set_defaults(func=cmd_backfill)

    rep = sub.add_parser(
        "reprocess",
        parents=[home],
        help="reprocess a range of nights: a daemon backfill (or --local, in this process)",
        description="Plans, per instrument, the nights from the first to the last in START..END that hold "
        "data, and launches a partition backfill of them through the webserver (the daemon runs it; the "
        "UI's backfill page shows it), or runs it here with --local. Products whose fingerprints still "
        "match (same data, calibrations, settings and software) are kept.",
    )
    rep.add_argument("start", type=parse_date, help="first night, YYYY-MM-DD")
    rep.add_argument("end", type=parse_date, nargs="?", help="last night (default: START)")
    rep.add_argument("--instrument", action="append", help="only this instrument (repeatable)")
    rep.add_argument("--assets", help="comma-separated partitioned assets (default: all, in graph order)")
    rep.add_argument("--dry-run", action="store_true", help="say what would be done; launch nothing")
    rep.add_argument(
        "--local", action="store_true", help="run here, partition by partition, without a daemon"
    )
    rep.add_argument(
        "--url", help="the Dagster webserver (default: $DAGSTER_WEBSERVER_URL or http://127.0.0.1:3000)"
    )
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_reprocess)
