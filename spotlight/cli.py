"""The `spotlight` command: run the service (`up`, `api`, `worker`), export its spec, submit a search.

    spotlight up [--host 127.0.0.1] [--port 8000] [--workers 1] [--data-dir .spotlight]
    spotlight api [--host ...] [--port ...]          the HTTP API alone (uvicorn)
    spotlight worker [--burst] [--no-callbacks | --callbacks-only]   one RQ worker
    spotlight openapi [--output FILE]                the API's OpenAPI spec
    spotlight submit DATA [--wait] [--param k=v ...] [--fail-if EXPR] [--json]   (spotlight/cli_client.py)
    spotlight status|regions|members|report|cancel JOB [--json]

Every process reads its configuration from the environment (spotlight/settings.py); the flags
here only override the few a person types. This module imports neither FastAPI nor torch at
import time: each command imports what it runs, so `spotlight api` never loads torch and
`spotlight worker` never loads FastAPI.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

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


# ----- client commands (submit, status, regions, members, report, cancel): spotlight/cli_client.py -----
from spotlight.cli_client import parse_param as _parse_param  # noqa: F401 - kept importable here
from spotlight.cli_client import register as register_client_commands


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

    register_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings())
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
