"""The `spotlight` command: run the service (`up`, `api`, `worker`), export its spec, submit a search.

    spotlight up [--host 127.0.0.1] [--port 8000] [--workers 1] [--data-dir .spotlight]
    spotlight api [--host ...] [--port ...]          the HTTP API alone (uvicorn)
    spotlight worker [--burst] [--no-callbacks | --callbacks-only]   one RQ worker
    spotlight openapi [--output FILE]                the API's OpenAPI spec
    spotlight submit EMB.npy LOSSES.npy [--labels L.npy] [--wait] [--param k=v ...]

Every process reads its configuration from the environment (spotlight/settings.py); the flags
here only override the few a person types. This module imports neither FastAPI nor torch at
import time: each command imports what it runs, so `spotlight api` never loads torch and
`spotlight worker` never loads FastAPI.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spotlight.logs import JsonFormatter
from spotlight.settings import Settings, get_settings

log = logging.getLogger("spotlight.cli")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


# ----- logging -----
def configure_logging(settings: Settings) -> None:
    """One handler on the root logger (RQ then adds none of its own), JSON lines unless told not."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if settings.log_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


# ----- binding safety -----
def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def has_api_keys(settings: Settings) -> bool:
    return bool(settings.api_keys) or settings.api_keys_file is not None


def check_bind(settings: Settings, host: str, allow_open_bind: bool) -> None:
    """With no API keys the service is open to whoever can reach it: loopback only, unless told."""
    if has_api_keys(settings):
        return
    if is_loopback(host):
        log.warning("no API keys configured: the API runs open, so it binds to %s (loopback) only", host)
        return
    if not allow_open_bind:
        raise SystemExit(
            f"refusing to bind {host} without API keys: anyone who can reach it could read every dataset. "
            "Set SPOTLIGHT_API_KEYS (or SPOTLIGHT_API_KEYS_FILE), bind 127.0.0.1, or pass --allow-open-bind."
        )
    log.warning("no API keys configured and --allow-open-bind given: the API on %s is open to anyone", host)


# ----- spotlight worker / api / openapi -----
def cmd_worker(args: argparse.Namespace) -> int:
    from worker.runner import run_worker

    run_worker(get_settings(), burst=args.burst, name=args.name,
               searches=not args.callbacks_only, callbacks=not args.no_callbacks)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

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
    from service.openapi_export import openapi_json

    text = openapi_json()
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text if text.endswith("\n") else text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


# ----- spotlight up -----
def _die_with_parent_preexec() -> None:
    """In a child of `up`: get SIGTERM if `up` dies without cleaning up (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class Supervisor:
    """The children of `spotlight up`: started in their own sessions (a terminal's Ctrl-C reaches
    only `up`, which then stops them in order), restarted if a worker dies, all stopped on exit."""

    def __init__(self, env: dict[str, str], stop_timeout_s: float = 15.0) -> None:
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.children: dict[str, tuple[list[str], subprocess.Popen[bytes]]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=os.getcwd(),
            start_new_session=True,
            preexec_fn=_die_with_parent_preexec,
        )
        self.children[name] = (argv, proc)
        log.info("started %s (pid %d)", name, proc.pid)
        return proc

    def exited(self) -> list[tuple[str, int]]:
        return [(name, proc.returncode) for name, (_, proc) in self.children.items() if proc.poll() is not None]

    def restart(self, name: str) -> None:
        argv, _ = self.children[name]
        self.start(name, argv)

    def pids(self) -> list[int]:
        return [proc.pid for _, proc in self.children.values()]

    def stop(self) -> None:
        """SIGTERM all; a worker busy with a job gets a second SIGTERM after a grace period (RQ's cold
        stop: the job is abandoned and retried on the next start); then SIGKILL what is left."""
        live = {name: proc for name, (_, proc) in self.children.items() if proc.poll() is None}
        for name, proc in live.items():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        warned = False
        while any(p.poll() is None for p in live.values()) and time.monotonic() < deadline:
            if not warned and time.monotonic() > deadline - self.stop_timeout_s / 2:
                for name, proc in live.items():
                    if proc.poll() is None and name.startswith("worker"):
                        log.warning("%s still busy: stopping it now; its job will be retried", name)
                        proc.send_signal(signal.SIGTERM)
                warned = True
            time.sleep(0.1)
        for name, proc in live.items():
            if proc.poll() is None:
                log.warning("%s did not stop in time: killing it", name)
                _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                log.error("%s (pid %d) would not die", name, proc.pid)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    check_bind(settings, args.host, args.allow_open_bind)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["SPOTLIGHT_DATA_DIR"] = str(data_dir)

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        log.info("got %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    redis_server = None
    supervisor = Supervisor(env, stop_timeout_s=args.stop_timeout)
    exit_code = 0
    try:
        if not settings.redis_url:
            from spotlight.redis_server import EmbeddedRedis

            redis_server = EmbeddedRedis(data_dir / "redis").start()
            env["REDIS_URL"] = redis_server.url
            log.info("embedded Redis on %s (data in %s)", redis_server.url, data_dir / "redis")
        me = [sys.executable, "-m", "spotlight.cli"]
        api_argv = [*me, "api", "--host", args.host, "--port", str(args.port)]
        if args.allow_open_bind:
            api_argv.append("--allow-open-bind")
        supervisor.start("api", api_argv)
        for i in range(args.workers):
            supervisor.start(f"worker-{i}", [*me, "worker", "--no-callbacks"])
        supervisor.start("worker-callbacks", [*me, "worker", "--callbacks-only"])
        log.info("spotlight is up on http://%s:%d with %d worker(s) and a callbacks worker; Ctrl-C stops it",
                 args.host, args.port, args.workers)
        restarts: list[float] = []
        while not stop.wait(0.5):
            for name, code in supervisor.exited():
                if name == "api":
                    log.error("the API exited (status %s): stopping everything", code)
                    exit_code = 1
                    stop.set()
                    break
                restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
                if len(restarts) > 5:
                    log.error("workers keep dying (%s exited with %s): stopping everything", name, code)
                    exit_code = 1
                    stop.set()
                    break
                log.warning("%s exited (status %s): restarting it", name, code)
                supervisor.restart(name)
    finally:
        supervisor.stop()
        if redis_server is not None:
            redis_server.stop()
        log.info("stopped")
    return exit_code


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


# ----- the parser -----
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotlight", description="Find the high-loss regions of a model's embedding space.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run Redis (embedded unless REDIS_URL is set), the API and workers, in the foreground")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1)
    up.add_argument("--data-dir", default=os.environ.get("SPOTLIGHT_DATA_DIR", ".spotlight"))
    up.add_argument("--allow-open-bind", action="store_true", help="bind a non-loopback address without API keys")
    up.add_argument("--stop-timeout", type=float, default=15.0, help="seconds to wait for children on stop")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--allow-open-bind", action="store_true", help="bind a non-loopback address without API keys")
    api.set_defaults(func=cmd_api)

    wk = sub.add_parser("worker", help="run one worker (needs REDIS_URL)")
    wk.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    wk.add_argument("--name", default=None, help="worker name (default host.pid)")
    only = wk.add_mutually_exclusive_group()
    only.add_argument("--no-callbacks", action="store_true",
                      help="searches only: leave webhook deliveries to a --callbacks-only worker")
    only.add_argument("--callbacks-only", action="store_true",
                      help="deliver webhooks only (no torch needed: runs in the API's image)")
    wk.set_defaults(func=cmd_worker)

    oa = sub.add_parser("openapi", help="print or write the API's OpenAPI spec")
    oa.add_argument("--output", "-o", default=None)
    oa.set_defaults(func=cmd_openapi)

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
    args = build_parser().parse_args(argv)
    configure_logging(get_settings())
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
