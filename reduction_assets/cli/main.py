"""The operator command line: `reduction-assets ...`."""

from __future__ import annotations

import argparse
import os
import sys

from reduction_assets.cli import archive, backfill, maintenance, night, operator
from reduction_assets.cli.common import EXIT_OK, EXIT_UNUSABLE, HOME_HELP, version_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reduction-assets", description=__doc__)
    parser.add_argument("--home", help=HOME_HELP)
    parser.add_argument("--version", action="version", version=version_line())
    # `--home` is accepted after the subcommand too; there it must not reset a value given before.
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    # The order of `reduction-assets --help`: the night, reprocessing, operators, upkeep, the archive.
    night.add_commands(sub, home)
    backfill.add_commands(sub, home)
    operator.add_operator_commands(sub, home)
    maintenance.add_commands(sub, home)
    archive.add_commands(sub, home)
    return parser


def main(argv: list[str] | None = None) -> int:
    from reduction_assets.catalog import CatalogUnavailable
    from reduction_assets.orchestration.process import InstanceUnavailable
    from reduction_assets.support.home import HomeUnusable

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
    except (CatalogUnavailable, InstanceUnavailable, HomeUnusable) as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
