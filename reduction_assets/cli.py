"""The operator command line: `reduction-assets ...`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from reduction_assets.home import resolve_home


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
    widths = {c: max([len(c)] + [len(str(r.get(c) if r.get(c) is not None else "-")) for r in rows])
              for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(
            str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def cmd_simulate(args) -> int:
    from reduction_assets.instruments import load_registry
    from reduction_assets.simulate import SimulationConfig, simulate_night

    registry = load_registry()
    if args.instrument not in registry.instruments:
        print(f"unknown instrument {args.instrument!r}; known: {', '.join(registry.names)}", file=sys.stderr)
        return 2
    config = SimulationConfig(
        size=args.size, binning=(args.binning, args.binning), seed=args.seed, n_bias=args.n_bias,
        n_dark=args.n_dark, dark_exptime=args.dark_exptime, n_flat=args.n_flat, n_targets=args.n_targets,
        n_dither=args.n_dither, science_exptime=args.science_exptime)
    try:
        night = simulate_night(registry[args.instrument], args.night, Path(args.out), config)
    except ValueError as err:
        print(f"simulate: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(night.frames)} frames of {args.instrument} night {args.night} to {args.out} "
          f"(truth: {night.truth_path})")
    return 0


def cmd_process(args) -> int:
    from reduction_assets.process import process_landing

    home = resolve_home(args.home)
    outcome = process_landing(home, settle_seconds=args.settle_seconds, max_wait_seconds=args.max_wait,
                              log_level="DEBUG" if args.verbose else "WARNING")
    failed = outcome.failed
    print(f"{len(outcome.runs)} runs executed, {len(failed)} failed, {len(outcome.skipped)} skipped "
          f"(home {home.root})")
    return 1 if failed else 0


def _catalog(home):
    from reduction_assets.catalog import Catalog
    from reduction_assets.instruments import load_registry

    catalog = Catalog(home.catalog_url())
    catalog.create()
    catalog.sync_instruments(load_registry())
    return catalog


def cmd_progress(args) -> int:
    from reduction_assets.catalog.queries import progress_rows
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
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, ["night", "instrument", "raw", "duplicates", "quarantined", "masters",
                            "reduced", "last_raw_time"]))
    return 0


def cmd_quarantine(args) -> int:
    from reduction_assets.catalog.queries import quarantine_rows

    home = resolve_home(args.home).ensure()
    with _catalog(home).session() as session:
        rows = quarantine_rows(session, include_resolved=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("nothing in quarantine")
    else:
        print(_table(rows, ["quarantined_at", "reason", "instrument", "night", "original_path", "message"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reduction-assets", description=__doc__)
    parser.add_argument("--home", help="REDUCTION_HOME folder (default: $REDUCTION_HOME or ~/reduction_home)")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write a simulated night of raw frames and its truth file")
    sim.add_argument("--instrument", required=True)
    sim.add_argument("--night", required=True, type=_date)
    sim.add_argument("--out", required=True)
    sim.add_argument("--size", type=_size, help="unbinned imaging area NYxNX (one of the instrument's "
                     "readout sizes; default the smallest)")
    sim.add_argument("--binning", type=int, default=1)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--n-bias", type=int, default=5)
    sim.add_argument("--n-dark", type=int, default=5)
    sim.add_argument("--dark-exptime", type=float, default=300.0)
    sim.add_argument("--n-flat", type=int, default=5, help="flats per filter")
    sim.add_argument("--n-targets", type=int, default=2)
    sim.add_argument("--n-dither", type=int, default=3, help="exposures per target and filter")
    sim.add_argument("--science-exptime", type=float, default=60.0)
    sim.set_defaults(func=cmd_simulate)

    proc = sub.add_parser("process", help="process what is in landing/ now, as the daemon would")
    proc.add_argument("--settle-seconds", type=float, default=5.0,
                      help="a file must be unmodified this long before it is ingested")
    proc.add_argument("--max-wait", type=float, default=600.0,
                      help="give up waiting for unsettled files after this many seconds")
    proc.add_argument("--verbose", action="store_true", help="show Dagster's run logs")
    proc.set_defaults(func=cmd_process)

    prog = sub.add_parser("progress", help="per-night, per-instrument processing table")
    prog.add_argument("start", type=_date)
    prog.add_argument("end", type=_date, nargs="?")
    prog.add_argument("--instrument")
    prog.add_argument("--json", action="store_true")
    prog.set_defaults(func=cmd_progress)

    quar = sub.add_parser("quarantine", help="list quarantined files, oldest first")
    quar.add_argument("--all", action="store_true", help="include resolved (transient) entries")
    quar.add_argument("--json", action="store_true")
    quar.set_defaults(func=cmd_quarantine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
