"""The `shredline` command: a thin dispatcher. Settings are built here, once, and handed down.

Each folder registers its own subcommands (`<folder>/commands.py`, beside what they drive);
this module builds the parser from them, refuses to start when a private file is open to
others (`shredline.streams.private`), and turns any `ShredlineError` into one line on stderr
and its exit code (2 for bad configuration, 1 otherwise, 70 for an internal error).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from shredline.schemas.errors import ShredlineError
from shredline.streams.console import progress
from shredline.streams.ingest import commands as ingest
from shredline.streams.kafka import commands as kafka
from shredline.streams.launcher import commands as launcher
from shredline.streams.operations import commands as operations
from shredline.streams.private import check_private
from shredline.streams.processing import commands as processing
from shredline.streams.reporting import commands as reporting
from shredline.streams.settings import Settings, load_settings


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from shredline.streams.demo import run_demo  # imports everything: only when asked for

    return run_demo(settings, progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shredline", description="Compliance pipeline: crypto-shredding on Apache Kafka."
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $SHREDLINE_CONFIG)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors (may quote data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (launcher, kafka, ingest, processing, reporting, operations):
        commands.register(sub)
    sub.add_parser("demo", help="the whole story on a local broker").set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, args.config)
        check_private(settings)
        code: int = args.run(settings, args)
        return code
    except ShredlineError as exc:
        print(f"shredline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `shredline generate | head`: the reader is done, so are we
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("shredline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A library's message may quote the data it choked on: show only where it happened.
        if args.debug:
            raise
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"shredline: internal error: {type(exc).__name__} at {where} (rerun with --debug)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
