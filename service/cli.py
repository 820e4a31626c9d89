"""The API's commands, `spotlight api` and `spotlight openapi` (also `python -m service.cli ...`).

    spotlight api [--host 127.0.0.1] [--port 8000] [--allow-open-bind]   the HTTP API (uvicorn)
    spotlight openapi [--output FILE]                                     the API's OpenAPI spec

They live with the app they start; the shared `spotlight` command (spotlight/client/cli.py) hands these
names to this module's `main` and imports it only then. Needs the `server` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from service.openapi_export import openapi_json
from spotlight.server.binding import check_bind
from spotlight.server.commands import command_parser, run_command
from spotlight.server.settings import get_settings


def cmd_api(args: argparse.Namespace) -> int:
    settings = get_settings()
    check_bind(settings, args.host, args.allow_open_bind)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the app logs each request itself, as JSON
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    text = openapi_json()
    text = text if text.endswith("\n") else text + "\n"
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("The Spotlight API's commands.")
    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--allow-open-bind", action="store_true", help="bind a non-loopback address without API keys")
    api.set_defaults(func=cmd_api)
    oa = sub.add_parser("openapi", help="print or write the API's OpenAPI spec")
    oa.add_argument("--output", "-o", default=None)
    oa.set_defaults(func=cmd_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
