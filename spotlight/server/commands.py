"""What every server-side command (`spotlight api|openapi`, `spotlight worker`, `spotlight up`) shares:
its parser's shape and its start, which sets up the process's logging from Settings.

The client's commands (spotlight/client/cli.py) read no Settings: a laptop's `spotlight submit`
must not fail on a server's variable it never uses.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from spotlight.contract.logs import configure_logging
from spotlight.server.settings import get_settings


def command_parser(description: str) -> tuple[argparse.ArgumentParser, Any]:
    """A `spotlight` parser and its sub-command table."""
    parser = argparse.ArgumentParser(prog="spotlight", description=description)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv`, set up this process's logging from Settings, run the chosen command."""
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json, root=True)
    return int(args.func(args) or 0)
