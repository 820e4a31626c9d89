"""The worker's command, `spotlight worker` (also `python -m worker.cli worker ...`).

    spotlight worker [--burst] [--name NAME] [--no-callbacks | --callbacks-only]

It lives with the worker it starts; the shared `spotlight` command (spotlight/client/cli.py) hands the
name to this module's `main` and imports it only then. Searches need the `worker` extra (torch);
``--callbacks-only`` does not, so it runs in the API's image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spotlight.server.commands import command_parser, run_command
from spotlight.server.settings import get_settings
from worker.runner import run_worker


def cmd_worker(args: argparse.Namespace) -> int:
    run_worker(
        get_settings(),
        burst=args.burst,
        name=args.name,
        searches=not args.callbacks_only,
        callbacks=not args.no_callbacks,
    )
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
        help="searches only: leave webhook deliveries to a --callbacks-only worker",
    )
    only.add_argument(
        "--callbacks-only", action="store_true", help="deliver webhooks only (no torch needed: runs in the API's image)"
    )
    wk.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
