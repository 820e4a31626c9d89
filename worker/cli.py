"""The worker's command, `spotlight worker` (also `python -m worker.cli worker ...`).

    spotlight worker [--burst] [--name NAME] [--no-callbacks] [--no-reports] | --callbacks-only | --reports-only

It lives with the worker it starts; the shared `spotlight` command (spotlight/client/cli.py) hands the
name to this module's `main` and imports it only then. Searches need the `worker` extra (torch);
``--callbacks-only`` does not, so it runs in the API's image. ``--reports-only`` renders finished jobs'
reports (matplotlib, in the worker's image) and needs no GPU: with one running, search workers take
``--no-reports`` so that a search never waits behind a report (worker/runner.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spotlight.server.commands import command_parser, run_command
from spotlight.server.settings import get_settings
from worker.runner import run_worker


def served(args: argparse.Namespace) -> dict[str, bool]:
    """What a `spotlight worker` started with these flags serves: `run_worker`'s searches, reports and
    callbacks (the one place the flags are read; deploy/ and docker-compose are tested against it)."""
    only = args.callbacks_only or args.reports_only
    if only and args.no_reports:
        raise SystemExit(
            "spotlight worker: --no-reports is for search workers, not with --callbacks-only/--reports-only"
        )
    return {
        "searches": not only,
        "reports": args.reports_only or not (only or args.no_reports),
        "callbacks": args.callbacks_only or not (only or args.no_callbacks),
    }


def cmd_worker(args: argparse.Namespace) -> int:
    run_worker(get_settings(), burst=args.burst, name=args.name, **served(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("The Spotlight worker's command.")
    wk = sub.add_parser("worker", help="run one worker (needs REDIS_URL)")
    wk.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    wk.add_argument("--name", default=None, help="worker name (default host.pid)")
    only = wk.add_mutually_exclusive_group()
    only.add_argument(
        "--no-callbacks",
        action="store_true",
        help="searches (and reports) only: leave webhook deliveries to a --callbacks-only worker",
    )
    only.add_argument(
        "--callbacks-only", action="store_true", help="deliver webhooks only (no torch needed: runs in the API's image)"
    )
    only.add_argument(
        "--reports-only",
        action="store_true",
        help="render finished jobs' reports only (no GPU needed): run one beside search workers started --no-reports",
    )
    wk.add_argument(
        "--no-reports",
        action="store_true",
        help="searches (and callbacks) only: leave reports to a --reports-only worker, so no search waits behind one",
    )
    wk.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
