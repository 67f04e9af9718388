"""Operator commands: `mark`, `calibrations`, `requeue`, `audit`.

Each action is one catalog transaction recorded in the audit trail with who, when and why; the
partitions it concerns go back through the graph by themselves (the calibration sensor requests
their runs, or the next `reduction-assets process`). A command that finds a problem in its input
applies nothing.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import os
import sys
from dataclasses import dataclass

from reduction_assets.cli.common import open_catalog, parse_date, table
from reduction_assets.support.home import resolve_home

OPERATOR_ENV = "REDUCTION_OPERATOR"
GOOD, BAD = "good", "bad"
# A junk list: a header naming these columns (``state`` optional, ``bad`` by default), a row a frame.
JUNK_LIST_COLUMNS = ("frame", "reason")
FOLLOW_UP = (
    "the daemon's calibration_sensor runs them within a minute; without a daemon, run "
    "`reduction-assets process`"
)


def operator_name(given: str | None) -> str:
    """Who acts: --operator, else $REDUCTION_OPERATOR, else the login name."""
    if given:
        return given
    if os.environ.get(OPERATOR_ENV):
        return os.environ[OPERATOR_ENV]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class JunkEntry:
    line: int
    frame: str
    good: bool
    reason: str


class JunkListError(ValueError):
    """A junk list that cannot be applied; the message names every bad line."""


def parse_junk_list(text: str) -> list[JunkEntry]:
    """The entries of a junk-list CSV (header ``frame,reason`` and optionally ``state``: good or
    bad, default bad). Raises :class:`JunkListError` listing every problem with its line number."""
    reader = csv.reader(io.StringIO(text))
    problems: list[str] = []
    entries: list[JunkEntry] = []
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise JunkListError(f"line 1: {err}") from err
    if header is None:
        raise JunkListError("the file is empty: expected a header line `frame,reason[,state]`")
    columns = [c.strip().lower() for c in header]
    missing = [c for c in JUNK_LIST_COLUMNS if c not in columns]
    if missing:
        raise JunkListError(
            f"line 1: the header {','.join(header)!r} lacks {', '.join(missing)} "
            "(expected `frame,reason[,state]`)"
        )
    where = {name: columns.index(name) for name in (*JUNK_LIST_COLUMNS, "state") if name in columns}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                problems.append(f"line {line}: {len(row)} fields, the header has {len(columns)}")
                continue
            frame = row[where["frame"]].strip()
            reason = row[where["reason"]].strip()
            state = row[where["state"]].strip().lower() if "state" in where else BAD
            state = state or BAD
            if not frame:
                problems.append(f"line {line}: no frame")
            if not reason:
                problems.append(f"line {line}: no reason")
            if state not in (GOOD, BAD):
                problems.append(f"line {line}: state {state!r} is neither good nor bad")
            if frame and reason and state in (GOOD, BAD):
                entries.append(JunkEntry(line, frame, state == GOOD, reason))
    except csv.Error as err:
        problems.append(f"line {reader.line_num}: {err}")
    if problems:
        raise JunkListError("; ".join(problems))
    if not entries:
        raise JunkListError("the list names no frame")
    return entries


def _print_results(results, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return
    for result in results:
        state = "" if result.changed else " (no change)"
        print(f"{verb} {result.target}{state} [audit #{result.action_id}]")
    partitions = sorted({p for r in results for p in r.partitions})
    if partitions:
        print(f"partitions going back through the graph: {', '.join(partitions)}; {FOLLOW_UP}")


def _apply(args, command: str, verb: str, act) -> int:
    """Run ``act(session, operator) -> (results, problems)`` in one catalog transaction; any problem
    refuses the whole command, with nothing applied."""
    catalog = open_catalog(resolve_home(args.home).ensure())
    try:
        with catalog.session() as session:
            results, problems = act(session, operator_name(args.operator))
            if problems:
                # Raised inside the session, so that it is rolled back.
                raise _Refused("; ".join(problems) + f"; nothing was {verb}")
    except _Refused as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 2
    finally:
        catalog.dispose()
    _print_results(results, args.json, verb)
    return 0


class _Refused(Exception):
    """A command input with problems: nothing of it is committed."""


def cmd_mark(args) -> int:
    from reduction_assets.catalog.operations import Ambiguous, UnknownTarget, find_raw_frame, mark_frame

    if args.from_csv:
        if args.items:
            print("mark: give frames or --from-csv, not both", file=sys.stderr)
            return 2
        try:
            with open(args.from_csv, encoding="utf-8", newline="") as handle:
                entries = parse_junk_list(handle.read())
        except (OSError, UnicodeDecodeError) as err:
            print(f"mark: cannot read {args.from_csv}: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
        except JunkListError as err:
            print(f"mark: {args.from_csv}: {err}; nothing was marked", file=sys.stderr)
            return 2
    else:
        if len(args.items) < 2 or args.items[-1] not in (GOOD, BAD):
            print("mark: expected FRAME... good|bad (or --from-csv FILE)", file=sys.stderr)
            return 2
        if not args.reason or not args.reason.strip():
            print("mark: --reason is required: say why, it goes in the audit trail", file=sys.stderr)
            return 2
        good = args.items[-1] == GOOD
        entries = [JunkEntry(0, frame, good, args.reason.strip()) for frame in args.items[:-1]]

    def act(session, operator):
        frames, problems = [], []
        for entry in entries:
            try:
                frames.append((entry, find_raw_frame(session, entry.frame)))
            except (UnknownTarget, Ambiguous) as err:
                problems.append(f"line {entry.line}: {err}" if entry.line else str(err))
        if problems:
            return [], problems
        return [
            mark_frame(session, f, good=e.good, reason=e.reason, operator=operator) for e, f in frames
        ], []

    return _apply(args, "mark", "marked", act)


def cmd_requeue(args) -> int:
    from reduction_assets.catalog.operations import (
        Ambiguous,
        UnknownTarget,
        find_raw_frame,
        requeue_frame,
        requeue_landing_file,
    )
    from reduction_assets.tasks.landing import encode_name

    def requeue_one(session, name: str, operator: str):
        try:
            frame = find_raw_frame(session, name)
        except UnknownTarget:  # not ingested: perhaps a landing file the sensor gave up on
            return requeue_landing_file(session, encode_name(name), reason=args.reason, operator=operator)
        return requeue_frame(session, frame, reason=args.reason, operator=operator)

    def act(session, operator):
        results, problems = [], []
        for name in args.files:
            try:
                results.append(requeue_one(session, name, operator))
            except (UnknownTarget, Ambiguous, ValueError) as err:
                problems.append(str(err))
        return results, problems

    return _apply(args, "requeue", "requeued", act)


def cmd_calibrations_list(args) -> int:
    from reduction_assets.catalog.operations import calibration_rows
    from reduction_assets.instruments import load_registry

    names = load_registry().names
    if args.instrument and args.instrument not in names:
        print(
            f"calibrations: unknown instrument {args.instrument!r}; known: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    catalog = open_catalog(resolve_home(args.home).ensure())
    try:
        with catalog.session() as session:
            rows = calibration_rows(
                session,
                instrument=args.instrument,
                first_night=args.start,
                last_night=args.end or args.start,
                kind=args.type,
            )
    finally:
        catalog.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no master calibrations match")
    else:
        columns = ["id", "type", "instrument", "night", "binning", "readout", "filter", "exptime", "inputs"]
        print(table(rows, [*columns, "state", "valid_from", "valid_to", "used_by", "reason"]))
    return 0


def _calibration_action(args, verb: str, act) -> int:
    from reduction_assets.catalog.operations import UnknownTarget

    if not args.reason or not args.reason.strip():
        print(f"calibrations {verb}: --reason is required: it goes in the audit trail", file=sys.stderr)
        return 2
    catalog = open_catalog(resolve_home(args.home).ensure())
    try:
        with catalog.session() as session:
            result = act(session, operator_name(args.operator))
    except (UnknownTarget, ValueError) as err:
        print(f"calibrations {verb}: {err}", file=sys.stderr)
        return 2
    finally:
        catalog.dispose()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    done, redo = verb.removesuffix("y") + "ied", result.products_marked
    print(f"{done} {result.target} [audit #{result.action_id}]; {redo} reduced frames to redo")
    if result.partitions:
        print(f"partitions going back through the graph: {', '.join(result.partitions)}; {FOLLOW_UP}")
    return 0


def cmd_calibrations_certify(args) -> int:
    from reduction_assets.catalog.operations import certify

    return _calibration_action(
        args,
        "certify",
        lambda session, who: certify(
            session, args.id, begin=args.begin, end=args.end, reason=args.reason.strip(), operator=who
        ),
    )


def cmd_calibrations_decertify(args) -> int:
    from reduction_assets.catalog.operations import decertify

    return _calibration_action(
        args,
        "decertify",
        lambda session, who: decertify(session, args.id, reason=args.reason.strip(), operator=who),
    )


def cmd_audit(args) -> int:
    from reduction_assets.catalog.operations import audit_rows

    catalog = open_catalog(resolve_home(args.home).ensure())
    try:
        with catalog.session() as session:
            rows = audit_rows(session, args.limit)
    finally:
        catalog.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no operator actions recorded")
    else:
        print(table(rows, ["id", "acted_at", "operator", "action", "target", "reason"]))
    return 0


def add_operator_commands(sub, home: argparse.ArgumentParser) -> None:
    """The operator subcommands, added to the main parser's ``sub``."""
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--operator", help=f"who acts (default: ${OPERATOR_ENV}, else the login name)")
    who.add_argument("--json", action="store_true")

    mark = sub.add_parser(
        "mark",
        parents=[home, who],
        help="mark raw frames good or bad (recorded in the audit trail; their night is redone)",
        description="FRAME is a raw file's landing name as it arrived, or its catalog id. A frame marked bad "
        "leaves its night's products: masters made with it are rebuilt without it, its reduced frame no "
        "longer counts and leaves the stacks. --from-csv applies a junk list with a header "
        "`frame,reason[,state]` (state good or bad, default bad); a list with any bad line applies nothing.",
    )
    mark.add_argument("items", nargs="*", metavar="FRAME... good|bad")
    mark.add_argument("--reason", help="why (required, except with --from-csv)")
    mark.add_argument("--from-csv", metavar="FILE", help="a junk list")
    mark.set_defaults(func=cmd_mark)

    requeue = sub.add_parser(
        "requeue",
        parents=[home, who],
        help="redo chosen observations through the whole graph",
        description="FILE is a raw frame's landing name or catalog id (what was made from it is redone: "
        "masters, reduced frames, stacks, archive), or a landing file that never became a raw frame "
        "(the landing sensor asks for it again at once, even after it gave up).",
    )
    requeue.add_argument("files", nargs="+", metavar="FILE")
    requeue.add_argument("--reason", default="requeued by an operator")
    requeue.set_defaults(func=cmd_requeue)

    cal = sub.add_parser(
        "calibrations", parents=[home], help="list, certify and decertify master calibrations"
    )
    cal_sub = cal.add_subparsers(dest="calibrations_command", required=True)
    listing = cal_sub.add_parser("list", parents=[home], help="masters with their state, validity and use")
    listing.add_argument("start", type=parse_date, nargs="?", help="first night (default: all)")
    listing.add_argument("end", type=parse_date, nargs="?", help="last night (default: START)")
    listing.add_argument("--instrument")
    listing.add_argument("--type", choices=("bias", "dark", "flat"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_calibrations_list)
    cert = cal_sub.add_parser(
        "certify",
        parents=[home, who],
        help="certify a master as good for a range of nights (frames it calibrated outside it are redone)",
    )
    cert.add_argument("id", type=int, metavar="ID")
    cert.add_argument("--begin", type=parse_date, help="first night it is valid for (default: open)")
    cert.add_argument("--end", type=parse_date, help="last night it is valid for (default: open)")
    cert.add_argument("--reason", required=True)
    cert.set_defaults(func=cmd_calibrations_certify)
    decert = cal_sub.add_parser(
        "decertify",
        parents=[home, who],
        help="withdraw a master: the frames it calibrated are redone with the next best one",
    )
    decert.add_argument("id", type=int, metavar="ID")
    decert.add_argument("--reason", required=True)
    decert.set_defaults(func=cmd_calibrations_decertify)

    audit = sub.add_parser("audit", parents=[home], help="operator actions, newest first (who, when, why)")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)
