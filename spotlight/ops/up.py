"""`spotlight up`: Redis (embedded unless REDIS_URL is set), the API and workers on one machine.

The API and the workers run as child processes started by module name (``python -m service.cli
api``, ``python -m worker.cli worker``), so this module imports neither app: it only supervises
them. Each child runs in its own session (a terminal's Ctrl-C reaches only `up`, which then stops
them in order) and gets SIGTERM from the kernel if `up` dies without stopping them.

The bind rule both `up` and `spotlight api` apply is the server's (spotlight/server/binding.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from spotlight.server.binding import check_bind
from spotlight.server.commands import command_parser, run_command
from spotlight.server.process import die_with_parent
from spotlight.server.settings import get_settings

log = logging.getLogger("spotlight.ops.up")

API_MODULE = "service.cli"
WORKER_MODULE = "worker.cli"


# ----- the children -----
class Supervisor:
    """The children of `spotlight up`: started in their own sessions, restarted if a worker dies,
    all stopped on exit."""

    def __init__(self, env: dict[str, str], stop_timeout_s: float = 15.0) -> None:
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.children: dict[str, tuple[list[str], subprocess.Popen[bytes]]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        parent = os.getpid()
        proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=os.getcwd(),
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),
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
        for proc in live.values():
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--callback-workers",
        type=int,
        default=2,
        help="webhook delivery workers: deliveries run in parallel, so one receiver that hangs does not hold the others",
    )
    parser.add_argument(
        "--report-workers",
        type=int,
        default=1,
        help="report workers: they render finished jobs' reports, so a search never waits behind one "
        "(0: the search workers render them, after any waiting search)",
    )
    parser.add_argument("--data-dir", default=os.environ.get("SPOTLIGHT_DATA_DIR", ".spotlight"))
    parser.add_argument("--allow-open-bind", action="store_true", help="bind a non-loopback address without API keys")
    parser.add_argument("--stop-timeout", type=float, default=15.0, help="seconds to wait for children on stop")


# After the embedded Redis is restarted, worker exits within this window are blamed on the outage.
REDIS_GRACE_S = 30.0
REDIS_START_TIMEOUT_S = 60.0


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    check_bind(settings, args.host, args.allow_open_bind, warn=False)  # the API child warns
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
            from spotlight.ops.redis_server import EmbeddedRedis

            redis_server = EmbeddedRedis(data_dir / "redis").start()
            env["REDIS_URL"] = redis_server.url
            log.info("embedded Redis on %s (data in %s)", redis_server.url, data_dir / "redis")
        api_argv = [sys.executable, "-m", API_MODULE, "api", "--host", args.host, "--port", str(args.port)]
        if args.allow_open_bind:
            api_argv.append("--allow-open-bind")
        supervisor.start("api", api_argv)
        worker = [sys.executable, "-m", WORKER_MODULE, "worker"]
        # With a report worker, the search workers leave reports to it: a search that arrives while a
        # report renders starts at once instead of waiting for the plots (worker/runner.py).
        searches = ["--no-callbacks", "--no-reports"] if args.report_workers > 0 else ["--no-callbacks"]
        for i in range(args.workers):
            supervisor.start(f"worker-{i}", [*worker, *searches])
        for i in range(max(0, args.report_workers)):
            supervisor.start(f"worker-reports-{i}", [*worker, "--reports-only"])
        for i in range(max(1, args.callback_workers)):
            supervisor.start(f"worker-callbacks-{i}", [*worker, "--callbacks-only"])
        log.info(
            "spotlight is up on http://%s:%d with %d worker(s), %d report worker(s) and %d callbacks "
            "worker(s); Ctrl-C stops it",
            args.host,
            args.port,
            args.workers,
            max(0, args.report_workers),
            max(1, args.callback_workers),
        )
        restarts: list[float] = []
        redis_restarts: list[float] = []
        redis_back_at = float("-inf")
        while not stop.wait(0.5):
            if redis_server is not None and not redis_server.alive():
                # Restarted on the same port and folder: the AOF brings back queued jobs and results.
                # The API answers 503 meanwhile; workers reconnect (or are restarted below).
                now = time.monotonic()
                redis_restarts = [t for t in redis_restarts if t > now - 60] + [now]
                if len(redis_restarts) > 5:
                    log.error(
                        "the embedded Redis keeps dying (status %s): stopping everything", redis_server.returncode
                    )
                    exit_code = 1
                    stop.set()
                    break
                log.warning(
                    "the embedded Redis exited (status %s): restarting it on its AOF in %s",
                    redis_server.returncode,
                    data_dir / "redis",
                )
                try:
                    redis_server.start(timeout=REDIS_START_TIMEOUT_S)
                except RuntimeError as exc:
                    log.error("could not restart the embedded Redis (%s); trying again", exc)
                    continue
                redis_back_at = time.monotonic()
                log.info("the embedded Redis is back on %s", redis_server.url)
            for name, code in supervisor.exited():
                if name == "api":
                    log.error("the API exited (status %s): stopping everything", code)
                    exit_code = 1
                    stop.set()
                    break
                # A worker that lost Redis while it was down is not crash-looping: restart it freely.
                if time.monotonic() - redis_back_at > REDIS_GRACE_S:
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


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("Run Spotlight on one machine.")
    up = sub.add_parser(
        "up", help="run Redis (embedded unless REDIS_URL is set), the API and workers, in the foreground"
    )
    add_arguments(up)
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
