"""The operator command line: `reduction-assets ...`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from reduction_assets.fits.headers import shown
from reduction_assets.home import resolve_home
from reduction_assets.keys import ARCHIVE_LEVELS


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from err


def _size(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size NYxNX, e.g. 128x128") from err
    return ny, nx


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {
        c: max([len(c)] + [len(str(r.get(c) if r.get(c) is not None else "-")) for r in rows])
        for c in columns
    }
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append(
            "  ".join(str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns)
        )
    return "\n".join(lines)


def cmd_simulate(args) -> int:
    from reduction_assets.instruments import load_registry
    from reduction_assets.simulate import SimulationConfig, simulate_night, with_drifts

    registry = load_registry()
    if args.instrument not in registry.instruments:
        print(f"unknown instrument {args.instrument!r}; known: {', '.join(registry.names)}", file=sys.stderr)
        return 2
    config = SimulationConfig(
        size=args.size,
        binning=(args.binning, args.binning),
        seed=args.seed,
        n_bias=args.n_bias,
        n_dark=args.n_dark,
        dark_exptime=args.dark_exptime,
        n_flat=args.n_flat,
        n_targets=args.n_targets,
        n_dither=args.n_dither,
        science_exptime=args.science_exptime,
    )
    try:
        config = with_drifts(config, registry[args.instrument], tuple(args.drift or ()))
        night = simulate_night(registry[args.instrument], args.night, Path(args.out), config)
    except ValueError as err:
        print(f"simulate: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(night.frames)} frames of {args.instrument} night {args.night} to {args.out} "
        f"(truth: {night.truth_path})"
    )
    return 0


# Exit codes of `process`, for cron wrappers and supervisors.
EXIT_OK = 0
EXIT_LEFT_UNDONE = 1  # a run failed, files were given up on, or (--strict) frames are not reducible
EXIT_UNUSABLE = 2  # the catalog or the Dagster instance cannot be used: nothing was done
# `archive ingest`: every file archived now (or, with --check-only, would be); every file was
# archived already; some file is invalid (the others are archived); the archive store failed.
EXIT_ARCHIVED, EXIT_ALREADY_ARCHIVED, EXIT_INVALID, EXIT_STORE_FAILED = 0, 3, 4, 5


def _echo(to_stderr: bool):
    from tqdm import tqdm

    # tqdm.write keeps progress bars intact; with --json, standard output holds only the document.
    return lambda line: tqdm.write(line, file=sys.stderr if to_stderr else sys.stdout)


def process_summary(outcome, home) -> dict:
    """The outcome of `process` as the document `process --json` prints."""
    tick = outcome.last_tick
    return {
        "home": str(home.root),
        "runs": outcome.runs,
        "executed": len(outcome.runs),
        "failures": [run for run in outcome.runs if not run["success"]],
        "skipped": outcome.skipped,
        "trends": outcome.trends,
        "busy": outcome.busy,
        "files_waiting": {
            "to_settle": len(tick.waiting) if tick else 0,
            "for_runs_in_flight": len(tick.deferred) if tick else 0,
            "for_their_night": len(tick.not_open) if tick else 0,
            "for_a_retry": len(tick.retry_later) if tick else 0,
            "given_up": len(tick.gave_up) if tick else 0,
            "gave_up_waiting": len(outcome.gave_up_waiting),
        },
        "not_reducible": {"count": len(outcome.not_reducible), "frames": outcome.not_reducible},
        "ignored": len(tick.ignored) if tick else 0,
    }


def cmd_process(args) -> int:
    from reduction_assets.process import Interrupted, process_landing
    from reduction_assets.sensors import MAX_ATTEMPTS

    home = resolve_home(args.home)
    echo = _echo(to_stderr=args.json)
    try:
        outcome = process_landing(
            home,
            settle_seconds=args.settle_seconds,
            max_wait_seconds=args.max_wait,
            lock_wait_seconds=args.wait,
            log_level="DEBUG" if args.verbose else "WARNING",
            echo=echo,
        )
    except Interrupted as interrupted:
        print(
            f"process: stopped by {interrupted}; the interrupted run is marked failed and its files "
            "are retried by the next invocation",
            file=sys.stderr,
        )
        return interrupted.exit_code
    tick = outcome.last_tick
    left_undone = bool(outcome.failed or outcome.gave_up_waiting or (tick and tick.gave_up))
    code = EXIT_LEFT_UNDONE if left_undone or (args.strict and outcome.not_reducible) else EXIT_OK
    if outcome.busy:
        code = EXIT_OK
    if args.json:
        print(json.dumps({**process_summary(outcome, home), "exit_code": code}, indent=2, default=str))
        return code
    if outcome.busy:
        return code
    failed_runs = sum(1 for run in outcome.runs if not run["success"])
    print(
        f"{len(outcome.runs)} runs executed, {failed_runs} failed, {len(outcome.skipped)} skipped "
        f"(home {home.root})"
    )
    if outcome.trends:
        redrawn = [t["partition"] for t in outcome.trends if t["success"]]
        failed_trends = [t["partition"] for t in outcome.trends if not t["success"]]
        print(
            (f"quality trends redrawn for {', '.join(redrawn)}" if redrawn else "")
            + ("; " if redrawn and failed_trends else "")
            + (f"quality trends of {', '.join(failed_trends)} FAILED" if failed_trends else "")
        )
    if tick is not None and tick.not_open:
        nights = ", ".join(sorted(set(tick.not_open.values())))
        print(
            f"{len(tick.not_open)} files belong to night {nights}, whose partition opens at the next "
            "UTC midnight: the next invocation after that ingests them"
        )
    if outcome.gave_up_waiting:
        print(
            f"{len(outcome.gave_up_waiting)} files were still changing (or waiting for a run in flight) "
            f"after --max-wait {args.max_wait:.0f} s: the next invocation takes them"
        )
    if tick is not None and tick.gave_up:
        print(
            f"{len(tick.gave_up)} files are not asked for again after {MAX_ATTEMPTS} failed runs "
            f"(touch or replace them to retry): {', '.join(shown(n) for n in tick.gave_up[:5])}"
        )
    if outcome.not_reducible:
        print(f"{len(outcome.not_reducible)} science frames are left not reducible:")
        for row in outcome.not_reducible:
            print(f"  {row['instrument']} {row['night']} {shown(row['frame'])}: {row['reason']}")
    if tick is not None and tick.ignored:
        print(
            f"{len(tick.ignored)} landing entries are not arrivals (hidden, temporary or not regular "
            "files): `reduction-assets quarantine --ignored` lists them"
        )
    return code


def _catalog(home):
    from reduction_assets.catalog import Catalog

    catalog = Catalog(home.catalog_url())
    catalog.check()
    return catalog


# One column per asset (the masters per type), the software that made the products, the last frame.
PROGRESS_COLUMNS = [
    "night",
    "instrument",
    "raw",
    "duplicates",
    "quarantined",
    "bias",
    "dark",
    "flat",
    "reduced",
    "not_reducible",
    "stacked",
    "archived",
    "software",
    "last_raw_time",
    # Added after the others, so that scripts reading the table by position keep working.
    "marked_bad",
]


def cmd_progress(args) -> int:
    from reduction_assets.catalog.reports import has_data, progress_rows
    from reduction_assets.instruments import load_registry

    home = resolve_home(args.home).ensure()
    names = load_registry().names
    if args.instrument:
        if args.instrument not in names:
            print(f"unknown instrument {args.instrument!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [args.instrument]
    end = args.end or args.start
    if end < args.start:
        print("progress: END is before START", file=sys.stderr)
        return 2
    catalog = _catalog(home)
    with catalog.session() as session:
        rows = progress_rows(session, args.start, end, names)
    if args.end and not args.all:  # a range lists the nights that hold something
        rows = [row for row in rows if has_data(row)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no data from {args.start} to {end} (--all lists every night)")
    else:
        print(_table(rows, PROGRESS_COLUMNS))
    return 0


def _instruments_or_error(name: str | None) -> list[str] | None:
    from reduction_assets.instruments import load_registry

    names = load_registry().names
    if name and name not in names:
        print(f"unknown instrument {name!r}; known: {', '.join(names)}", file=sys.stderr)
        return None
    return [name] if name else names


def cmd_plot(args) -> int:
    from reduction_assets import plots
    from reduction_assets.catalog.quality import measured_metrics, metric_series
    from reduction_assets.instruments import load_registry
    from reduction_assets.quality import TrendPoint, trend_figure, trend_series
    from reduction_assets.reduction.quality import METRICS

    if args.metric not in METRICS:
        print(f"plot: unknown metric {args.metric!r}; known: {', '.join(METRICS)}", file=sys.stderr)
        return 2
    if args.end < args.start:
        print("plot: END is before START", file=sys.stderr)
        return 2
    names = _instruments_or_error(args.instrument)
    if names is None:
        return 2
    home = resolve_home(args.home).ensure()
    with _catalog(home).session() as session:
        rows = [TrendPoint.of(r) for r in metric_series(session, args.metric, args.start, args.end, names)]
        measured = measured_metrics(session)
    if not rows:
        print(
            f"plot: no values of {args.metric} from {args.start} to {args.end}"
            + (f" for {args.instrument}" if args.instrument else "")
            + (f" (metrics with values: {', '.join(measured)})" if measured else " (nothing measured yet)"),
            file=sys.stderr,
        )
        return 1
    instruments = sorted({r.instrument for r in rows})
    registry = load_registry()
    if len(instruments) == 1:
        figure = trend_figure(registry[instruments[0]], args.metric, rows, args.start, args.end)
    else:  # several instruments on one plot: a line per instrument (and filter), no limits
        series = [s for name in instruments for s in trend_series([r for r in rows if r.instrument == name],
                                                                  args.metric, prefix=name)]  # fmt: skip
        figure = plots.trend(
            args.metric, METRICS[args.metric].unit, series, f"{args.metric}, {args.start} to {args.end}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(plots.png(figure))
    nights = len({r.night for r in rows})
    print(f"wrote {out}: {args.metric} of {', '.join(instruments)}, {len(rows)} values on {nights} nights")
    return 0


def cmd_report(args) -> int:
    from reduction_assets.catalog.reports import quarantine_rows
    from reduction_assets.instruments import load_registry
    from reduction_assets.report import instrument_night, render_report
    from reduction_assets.storage import LocalStore

    names = _instruments_or_error(args.instrument)
    if names is None:
        return 2
    home = resolve_home(args.home).ensure()
    catalog, registry = _catalog(home), load_registry()
    products = LocalStore(home.products)
    parts = [instrument_night(catalog, products, registry[name], args.night) for name in names]
    with catalog.session() as session:
        # Files refused before their night was known, quarantined on the night's date or the next.
        unassigned = [
            row for row in quarantine_rows(session, include_resolved=True)
            if row["night"] is None
            and 0 <= (dt.date.fromisoformat(row["quarantined_at"][:10]) - args.night).days <= 1
        ]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(args.night, parts, unassigned))
    with_data = [p.instrument for p in parts if p.has_data]
    if not with_data:
        print(f"no frames for night {args.night}; wrote {out}, which says so")
    else:
        print(f"wrote {out}: night {args.night}, {', '.join(with_data)}")
    return 0


def cmd_quarantine(args) -> int:
    from reduction_assets.catalog.reports import quarantine_rows

    home = resolve_home(args.home).ensure()
    if args.ignored:
        return _list_ignored(home, args.json)
    with _catalog(home).session() as session:
        rows = quarantine_rows(session, include_resolved=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("nothing in quarantine")
    else:
        print(_table(rows, ["quarantined_at", "reason", "instrument", "night", "original_path", "message"]))
    return 0


def _list_ignored(home, as_json: bool) -> int:
    import time

    from reduction_assets.landing import scan_landing

    now = time.time()
    rows = [
        {
            "name": shown(entry.name),
            "reason": entry.reason,
            "size_bytes": entry.size,
            "age_hours": round((now - entry.mtime_ns / 1e9) / 3600, 2),
        }
        for entry in scan_landing(home.landing).ignored
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("nothing in landing/ is ignored")
    else:
        print(_table(rows, ["age_hours", "reason", "size_bytes", "name"]))
    return 0


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

    from reduction_assets.home import HomeBusy
    from reduction_assets.verify import verify_home

    home = resolve_home(args.home).ensure()
    catalog = _catalog(home)
    try:
        with home.lock(wait_seconds=args.wait):
            report = verify_home(
                home,
                catalog,
                repair=args.repair,
                progress=lambda items: tqdm(items, desc="verify", unit="file", disable=args.json or None),
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
            print(_table(rows, ["store", "problem", "key", "action"]))
        print(
            f"{report.checked} stored files checked, {len(report.findings)} findings, "
            f"{len(report.unrepaired)} problems left"
            + ("" if args.repair or not report.unrepaired else " (--repair acts on them)")
        )
    return 1 if report.unrepaired else 0


HOME_HELP = "REDUCTION_HOME folder (default: $REDUCTION_HOME or ~/reduction_home)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import reduction_assets

    try:
        dagster = version("dagster")
    except PackageNotFoundError:  # pragma: no cover - dagster is a dependency
        dagster = "not installed"
    python = sys.version.split()[0]
    return f"reduction-assets {reduction_assets.__version__} (dagster {dagster}, Python {python})"


def cmd_backfill(args) -> int:
    import math
    import time

    from tqdm import tqdm

    from reduction_assets.instruments import load_registry
    from reduction_assets.partitions import PARTITIONS_PER_BACKFILL_RUN, night_in_range
    from reduction_assets.reprocess import PlanRefused, check_instruments
    from reduction_assets.webserver import (
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
    from reduction_assets.reprocess import (
        PlanRefused,
        check_instruments,
        parse_assets,
        plan_reprocess,
        run_locally,
    )
    from reduction_assets.webserver import NightRange, WebserverClient, WebserverError, shown_url

    home = resolve_home(args.home).ensure()
    end = args.end or args.start
    try:
        instruments = check_instruments(args.instrument, load_registry().names)
        assets = parse_assets(args.assets)
        catalog = _catalog(home)
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
        outcome = run_locally(home, plan, echo=_echo(args.json))
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


def cmd_prune_runs(args) -> int:
    from reduction_assets.process import instance_for
    from reduction_assets.runs import prune_runs

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


def _archive_store(home):
    from reduction_assets.resources import ARCHIVE_STORE_ENV, archive_resource

    kind = os.environ.get(ARCHIVE_STORE_ENV, "local")
    return archive_resource(kind, str(home.root), lambda name, secret: os.environ.get(name))


def cmd_archive_ingest(args) -> int:
    from reduction_assets.archive import (
        ALREADY_ARCHIVED,
        FAILED,
        INVALID,
        ArchiveSettings,
        NotArchivable,
        Outcome,
        archive_one,
        candidate_for_file,
    )
    from reduction_assets.instruments import load_registry
    from reduction_assets.progress import progress
    from reduction_assets.storage import LocalStore, StoreError

    home = resolve_home(args.home).ensure()
    catalog, registry = _catalog(home), load_registry()
    resource = _archive_store(home)
    store = resource.store()
    outcomes = []
    for name in progress(args.files, "archiving", "file"):
        path = Path(name)
        try:
            if not path.is_file():
                raise NotArchivable("no such file")
            candidate, instrument = candidate_for_file(path, registry)
            outcome = archive_one(
                candidate,
                source=LocalStore(path.parent),
                archive=store,
                catalog=catalog,
                instrument=instrument,
                settings=ArchiveSettings(),
                notify=bool(resource.broker_url) and not args.check_only,
                check_only=args.check_only,
            )
        except NotArchivable as err:
            outcome = Outcome(path.name, "?", INVALID, reason=str(err))
        except StoreError as err:
            outcome = Outcome(path.name, "?", FAILED, reason=str(err))
        outcomes.append((str(path), outcome))
    statuses = {o.status for _, o in outcomes}
    if FAILED in statuses:
        code = EXIT_STORE_FAILED
    elif INVALID in statuses:
        code = EXIT_INVALID
    elif statuses == {ALREADY_ARCHIVED}:
        code = EXIT_ALREADY_ARCHIVED
    else:
        code = EXIT_ARCHIVED
    if resource.broker_url and not args.check_only:
        from reduction_assets.notify import deliver_pending

        deliver_pending(catalog, resource.broker_url, resource.exchange)
    rows = [
        {
            "file": file,
            "level": o.level,
            "status": o.status,
            "version": o.version,
            "record_id": o.record_id,
            "object_key": o.object_key,
            "reason": o.reason,
        }
        for file, o in outcomes
    ]
    if args.json:
        print(json.dumps({"files": rows, "exit_code": code}, indent=2))
    else:
        print(_table(rows, ["file", "level", "status", "version", "object_key", "reason"]))
    return code


def cmd_archive_find(args) -> int:
    from reduction_assets.catalog.archive import find_records

    home = resolve_home(args.home).ensure()
    with _catalog(home).session() as session:
        rows = find_records(
            session,
            night=args.night,
            instrument=args.instrument,
            target=args.target,
            level=args.level,
            md5=args.md5,
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print("no archive record matches")
    else:
        print(
            _table(rows, ["id", "level", "instrument", "night", "name", "version", "target", "filter", "md5"])
        )
    return EXIT_OK


def cmd_archive_get(args) -> int:
    import hashlib

    from reduction_assets.catalog.models import ArchiveRecord
    from reduction_assets.storage import StoreError

    home = resolve_home(args.home).ensure()
    with _catalog(home).session() as session:
        row = session.get(ArchiveRecord, args.id)
        if row is None:
            print(f"archive get: no record {args.id}", file=sys.stderr)
            return EXIT_LEFT_UNDONE
        key, name, md5 = row.object_key, row.name, row.md5
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    partial = out / f".{name}.partial"
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with _archive_store(home).store().open(key) as stream, open(partial, "wb") as handle:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
    except StoreError as err:
        partial.unlink(missing_ok=True)
        print(f"archive get: {err}", file=sys.stderr)
        return EXIT_LEFT_UNDONE
    if digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        print(
            f"archive get: {key} has MD5 {digest.hexdigest()}, the record {md5}: not written", file=sys.stderr
        )
        return EXIT_LEFT_UNDONE
    partial.replace(target)
    print(f"{target} (MD5 {md5} verified)")
    return EXIT_OK


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds} s"


def cmd_status(args) -> int:
    from dagster import DefaultSensorStatus

    from reduction_assets.process import instance_for
    from reduction_assets.runs import status_report
    from reduction_assets.sensors import SENSORS

    home = resolve_home(args.home).ensure()
    defaults = {s.name: s.default_status == DefaultSensorStatus.RUNNING for s in SENSORS}
    instance = instance_for(home)
    try:
        report = status_report(instance, defaults, failed_days=args.days)
    finally:
        instance.dispose()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return EXIT_OK
    for section in ("running", "queued", "failed"):
        rows = [{**row, "age": _age(row["age_seconds"])} for row in report[section]]
        title = f"{section} runs" + (
            f" (last {args.days:g} days, not succeeded since)" if section == "failed" else ""
        )
        print(f"{title}: {len(rows)}")
        if rows:
            print(_table(rows, ["run_id", "job", "partition", "status", "age", "backfill"]))
    print(f"pending backfills: {len(report['backfills'])}")
    if report["backfills"]:
        rows = [{**row, "age": _age(row["age_seconds"])} for row in report["backfills"]]
        print(_table(rows, ["backfill_id", "status", "age", "title"]))
    print(_table(report["sensors"], ["sensor", "running", "set_by"]))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reduction-assets", description=__doc__)
    parser.add_argument("--home", help=HOME_HELP)
    parser.add_argument("--version", action="version", version=_version())
    # `--home` is accepted after the subcommand too; there it must not reset a value given before.
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    from reduction_assets.simulate import DRIFTS

    sim = sub.add_parser(
        "simulate", parents=[home], help="write a simulated night of raw frames and its truth file"
    )
    sim.add_argument("--instrument", required=True)
    sim.add_argument("--night", required=True, type=_date)
    sim.add_argument("--out", required=True)
    sim.add_argument(
        "--size",
        type=_size,
        help="unbinned imaging area NYxNX: one of the instrument's "
        "readout sizes or, for cameras that read windows, any window within the largest "
        "(default the smallest readout)",
    )
    sim.add_argument("--binning", type=int, default=1)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--n-bias", type=int, default=5)
    sim.add_argument("--n-dark", type=int, default=5)
    sim.add_argument("--dark-exptime", type=float, default=300.0)
    sim.add_argument("--n-flat", type=int, default=5, help="flats per filter")
    sim.add_argument("--n-targets", type=int, default=2)
    sim.add_argument("--n-dither", type=int, default=3, help="exposures per target and filter")
    sim.add_argument("--science-exptime", type=float, default=60.0)
    sim.add_argument(
        "--drift",
        action="append",
        choices=sorted(DRIFTS),
        help="inject a drift (repeatable): " + "; ".join(f"{name}: {what}" for name, what in DRIFTS.items()),
    )
    sim.set_defaults(func=cmd_simulate)

    proc = sub.add_parser(
        "process", parents=[home], help="process what is in landing/ now, as the daemon would"
    )
    proc.add_argument(
        "--settle-seconds",
        type=float,
        default=5.0,
        help="a file must be unmodified this long before it is ingested",
    )
    proc.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="give up waiting for unsettled files after this many seconds",
    )
    proc.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another process working on the same home (default: "
        "exit at once, status 0, saying so)",
    )
    proc.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a science frame of the partitions processed is left not reducible",
    )
    proc.add_argument("--verbose", action="store_true", help="show Dagster's run logs")
    proc.add_argument(
        "--json",
        action="store_true",
        help="print the outcome as JSON (runs, failures, files waiting, not reducible frames); "
        "progress goes to standard error",
    )
    proc.set_defaults(func=cmd_process)

    prog = sub.add_parser("progress", parents=[home], help="per-night, per-instrument processing table")
    prog.add_argument("start", type=_date)
    prog.add_argument("end", type=_date, nargs="?")
    prog.add_argument("--instrument")
    prog.add_argument("--all", action="store_true", help="with a range, list nights without data too")
    prog.add_argument("--json", action="store_true")
    prog.set_defaults(func=cmd_progress)

    plot = sub.add_parser(
        "plot", parents=[home], help="a quality metric across nights as a PNG (time series from the catalog)"
    )
    plot.add_argument("metric", help="a quality metric (bias_level, read_noise, fwhm_arcsec, sky, ...)")
    plot.add_argument("start", type=_date)
    plot.add_argument("end", type=_date)
    plot.add_argument("--instrument", help="one instrument (default: every instrument with values)")
    plot.add_argument("--out", required=True, help="the PNG file to write")
    plot.set_defaults(func=cmd_plot)

    report = sub.add_parser(
        "report",
        parents=[home],
        help="a night's self-contained HTML report (arrivals, masters, checks, trends)",
    )
    report.add_argument("night", type=_date)
    report.add_argument("--instrument", help="one instrument (default: every instrument)")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=cmd_report)

    mig = sub.add_parser(
        "migrate", parents=[home], help="bring the catalog's schema to this release (alembic; idempotent)"
    )
    mig.set_defaults(func=cmd_migrate)

    quar = sub.add_parser("quarantine", parents=[home], help="list quarantined files, oldest first")
    quar.add_argument("--all", action="store_true", help="include resolved (transient) entries")
    quar.add_argument(
        "--ignored",
        action="store_true",
        help="list landing entries that are not ingested: hidden files, temporary names "
        "of transfers (.part...), FIFOs and devices; old ones are stuck transfers",
    )
    quar.add_argument("--json", action="store_true")
    quar.set_defaults(func=cmd_quarantine)

    back = sub.add_parser(
        "backfill",
        parents=[home],
        help="launch a daemon backfill of every partitioned asset over a range of nights",
        description="Launches, through the webserver, an asset backfill of exactly these nights for every "
        "partitioned asset (the UI's asset dialog would add the two weeks of later nights that depend on "
        "them through the calibration window). Up to 31 nights of one instrument run as one run.",
    )
    back.add_argument("start", type=_date, help="first night, YYYY-MM-DD")
    back.add_argument("end", type=_date, nargs="?", help="last night (default: START)")
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
    rep.add_argument("start", type=_date, help="first night, YYYY-MM-DD")
    rep.add_argument("end", type=_date, nargs="?", help="last night (default: START)")
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

    from reduction_assets.operator_cli import add_operator_commands

    add_operator_commands(sub, home)

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

    arch = sub.add_parser(
        "archive", parents=[home], help="the archive: ingest files, find records, get files"
    )
    arch_sub = arch.add_subparsers(dest="archive_command", required=True)
    ingest = arch_sub.add_parser(
        "ingest",
        parents=[home],
        help="validate and archive files from outside the graph (exit 0 archived, 3 all archived "
        "already, 4 some invalid, 5 the archive store failed)",
    )
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.add_argument("--check-only", action="store_true", help="validate and answer; archive nothing")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=cmd_archive_ingest)
    find = arch_sub.add_parser("find", parents=[home], help="archive records matching all the given fields")
    find.add_argument("--night", type=_date)
    find.add_argument("--instrument")
    find.add_argument("--target")
    find.add_argument("--level", choices=ARCHIVE_LEVELS)
    find.add_argument("--md5")
    find.add_argument("--json", action="store_true")
    find.set_defaults(func=cmd_archive_find)
    get = arch_sub.add_parser("get", parents=[home], help="download an archived file and verify its MD5")
    get.add_argument("id", type=int, metavar="ID")
    get.add_argument("--out", required=True, metavar="DIR")
    get.set_defaults(func=cmd_archive_get)
    return parser


def main(argv: list[str] | None = None) -> int:
    from reduction_assets.catalog import CatalogUnavailable
    from reduction_assets.process import InstanceUnavailable

    args = build_parser().parse_args(argv)
    # Whatever the caller's umask, nothing this command creates is writable by group or others.
    os.umask(os.umask(0) | 0o022)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`progress ... | head`): stop quietly, and let the interpreter's final
        # flush go nowhere instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (CatalogUnavailable, InstanceUnavailable) as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
