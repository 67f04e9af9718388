"""The archive from the command line: `archive ingest`, `archive find`, `archive get`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reduction_assets.cli.common import (
    EXIT_ALREADY_ARCHIVED,
    EXIT_ARCHIVED,
    EXIT_INVALID,
    EXIT_LEFT_UNDONE,
    EXIT_OK,
    EXIT_STORE_FAILED,
    archive_store,
    open_catalog,
    parse_date,
    table,
)
from reduction_assets.support.home import resolve_home
from reduction_assets.support.keys import ARCHIVE_LEVELS


def cmd_archive_ingest(args) -> int:
    from reduction_assets.instruments import load_registry
    from reduction_assets.storage import LocalStore, StoreError
    from reduction_assets.support.progress import progress
    from reduction_assets.tasks.archive import (
        ALREADY_ARCHIVED,
        FAILED,
        INVALID,
        ArchiveSettings,
        NotArchivable,
        Outcome,
        archive_one,
        candidate_for_file,
    )

    home = resolve_home(args.home).ensure()
    catalog, registry = open_catalog(home), load_registry()
    resource = archive_store(home)
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
        from reduction_assets.tasks.notify import deliver_pending

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
        print(table(rows, ["file", "level", "status", "version", "object_key", "reason"]))
    return code


def cmd_archive_find(args) -> int:
    from reduction_assets.catalog.archive import find_records

    home = resolve_home(args.home).ensure()
    with open_catalog(home).session() as session:
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
            table(rows, ["id", "level", "instrument", "night", "name", "version", "target", "filter", "md5"])
        )
    return EXIT_OK


def cmd_archive_get(args) -> int:
    import hashlib

    from reduction_assets.catalog.models import ArchiveRecord
    from reduction_assets.storage import StoreError

    home = resolve_home(args.home).ensure()
    with open_catalog(home).session() as session:
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
        with archive_store(home).store().open(key) as stream, open(partial, "wb") as handle:
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


def add_commands(sub, home: argparse.ArgumentParser) -> None:
    """`archive ingest|find|get`, on the CLI's subcommand parser."""
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
    find.add_argument("--night", type=parse_date)
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
