"""The night's commands: `simulate`, `process`, `progress`, `plot`, `report`, `quarantine`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from reduction_assets.cli.common import (
    EXIT_LEFT_UNDONE,
    EXIT_OK,
    echo_to,
    instruments_or_error,
    open_catalog,
    parse_date,
    parse_size,
    table,
)
from reduction_assets.fits.headers import shown
from reduction_assets.support.home import resolve_home


def cmd_simulate(args) -> int:
    from reduction_assets.instruments import load_registry
    from reduction_assets.simulator.night import SimulationConfig, simulate_night, with_drifts

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
    from reduction_assets.orchestration.process import Interrupted, process_landing
    from reduction_assets.orchestration.sensors import MAX_ATTEMPTS

    home = resolve_home(args.home)
    echo = echo_to(to_stderr=args.json)
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
    catalog = open_catalog(home)
    with catalog.session() as session:
        rows = progress_rows(session, args.start, end, names)
    if args.end and not args.all:  # a range lists the nights that hold something
        rows = [row for row in rows if has_data(row)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no data from {args.start} to {end} (--all lists every night)")
    else:
        print(table(rows, PROGRESS_COLUMNS))
    return 0


def cmd_plot(args) -> int:
    from reduction_assets.catalog.quality import measured_metrics, metric_series
    from reduction_assets.instruments import load_registry
    from reduction_assets.reduction.quality import METRICS
    from reduction_assets.support import plots
    from reduction_assets.tasks.quality import TrendPoint, trend_figure, trend_series

    if args.metric not in METRICS:
        print(f"plot: unknown metric {args.metric!r}; known: {', '.join(METRICS)}", file=sys.stderr)
        return 2
    if args.end < args.start:
        print("plot: END is before START", file=sys.stderr)
        return 2
    names = instruments_or_error(args.instrument)
    if names is None:
        return 2
    home = resolve_home(args.home).ensure()
    with open_catalog(home).session() as session:
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
    from reduction_assets.storage import LocalStore
    from reduction_assets.tasks.report import instrument_night, render_report

    names = instruments_or_error(args.instrument)
    if names is None:
        return 2
    home = resolve_home(args.home).ensure()
    catalog, registry = open_catalog(home), load_registry()
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
    with open_catalog(home).session() as session:
        rows = quarantine_rows(session, include_resolved=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("nothing in quarantine")
    else:
        print(table(rows, ["quarantined_at", "reason", "instrument", "night", "original_path", "message"]))
    return 0


def _list_ignored(home, as_json: bool) -> int:
    import time

    from reduction_assets.tasks.landing import scan_landing

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
        print(table(rows, ["age_hours", "reason", "size_bytes", "name"]))
    return 0


def _add_simulate(sub, home: argparse.ArgumentParser) -> None:
    """`simulate`: a simulated night of raw frames and its truth."""
    from reduction_assets.simulator.night import DRIFTS

    sim = sub.add_parser(
        "simulate", parents=[home], help="write a simulated night of raw frames and its truth file"
    )
    sim.add_argument("--instrument", required=True)
    sim.add_argument("--night", required=True, type=parse_date)
    sim.add_argument("--out", required=True)
    sim.add_argument(
        "--size",
        type=parse_size,
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


def _add_process(sub, home: argparse.ArgumentParser) -> None:
    """`process`: what is in landing/ now, as the daemon would."""
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


def _add_reports(sub, home: argparse.ArgumentParser) -> None:
    """`progress`, `plot`, `report` and `quarantine`: what the catalog says of nights."""
    prog = sub.add_parser("progress", parents=[home], help="per-night, per-instrument processing table")
    prog.add_argument("start", type=parse_date)
    prog.add_argument("end", type=parse_date, nargs="?")
    prog.add_argument("--instrument")
    prog.add_argument("--all", action="store_true", help="with a range, list nights without data too")
    prog.add_argument("--json", action="store_true")
    prog.set_defaults(func=cmd_progress)

    plot = sub.add_parser(
        "plot", parents=[home], help="a quality metric across nights as a PNG (time series from the catalog)"
    )
    plot.add_argument("metric", help="a quality metric (bias_level, read_noise, fwhm_arcsec, sky, ...)")
    plot.add_argument("start", type=parse_date)
    plot.add_argument("end", type=parse_date)
    plot.add_argument("--instrument", help="one instrument (default: every instrument with values)")
    plot.add_argument("--out", required=True, help="the PNG file to write")
    plot.set_defaults(func=cmd_plot)

    report = sub.add_parser(
        "report",
        parents=[home],
        help="a night's self-contained HTML report (arrivals, masters, checks, trends)",
    )
    report.add_argument("night", type=parse_date)
    report.add_argument("--instrument", help="one instrument (default: every instrument)")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=cmd_report)

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


def add_commands(sub, home: argparse.ArgumentParser) -> None:
    """The night's commands, on the CLI's subcommand parser (``home``: the shared ``--home``)."""
    _add_simulate(sub, home)
    _add_process(sub, home)
    _add_reports(sub, home)
