"""Webhook delivery against a real HTTP server on loopback: signature, retries, never raising."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from worker.webhook import (
    SIGNATURE_HEADER,
    deliver,
    encode_body,
    job_summary,
    sign,
    verify_signature,
)

SECRET = "s3cret-key"


class Receiver:
    """A real HTTP endpoint that answers from a script of status codes (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.arrived:
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                    i = min(len(receiver.requests) - 1, len(receiver.statuses) - 1)
                self.send_response(receiver.statuses[i])
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.arrived:
                    receiver.arrived.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_requests(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until `count` requests have been answered (a condition, not a polling loop)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} callback requests after {timeout} s")
            return list(self.requests)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    started: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        r = Receiver(statuses)
        r.thread.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.server.shutdown()
        r.server.server_close()


PAYLOAD = job_summary(
    {"job_id": "job_1", "dataset_id": "ds_1", "created_at": "2026-11-28T16:00:00+00:00", "params": {"n_spotlights": 2}},
    "finished",
    None,
    [{"index": 0, "weighted_loss": 1.5, "lift": 3.0, "center": [0.0] * 5}],
)


def test_delivers_signed_json_that_the_receiver_can_verify(receiver_factory: Any) -> None:
    r = receiver_factory([200])
    assert deliver(r.url, PAYLOAD, SECRET, retries=3, backoff=0.01) is True
    assert len(r.requests) == 1
    req = r.requests[0]
    assert req["path"] == "/hook?token=abc"
    assert req["headers"]["Content-Type"] == "application/json"
    assert verify_signature(req["body"], req["headers"][SIGNATURE_HEADER], SECRET)
    assert not verify_signature(req["body"], req["headers"][SIGNATURE_HEADER], "other-secret")
    assert not verify_signature(req["body"] + b" ", req["headers"][SIGNATURE_HEADER], SECRET)
    body = json.loads(req["body"])
    assert body["event"] == "job.finished"
    assert body["job"]["id"] == "job_1"
    assert body["regions"] == [{"index": 0, "weighted_loss": 1.5, "lift": 3.0}]  # no big arrays
    assert req["headers"]["X-Spotlight-Event"] == "job.finished"


def test_failing_then_succeeding_endpoint_is_retried_with_growing_backoff(receiver_factory: Any) -> None:
    r = receiver_factory([503, 500, 200])
    waits: list[float] = []
    assert deliver(r.url, PAYLOAD, SECRET, retries=5, backoff=0.01, sleep=waits.append) is True
    assert len(r.requests) == 3
    assert waits == [0.01, 0.02]
    # every attempt carries the same body and the same signature
    assert len({req["body"] for req in r.requests}) == 1
    assert all(verify_signature(req["body"], req["headers"][SIGNATURE_HEADER], SECRET) for req in r.requests)


def test_gives_up_after_the_bounded_attempts_and_returns_false(receiver_factory: Any) -> None:
    r = receiver_factory([500])
    waits: list[float] = []
    assert deliver(r.url, PAYLOAD, None, retries=4, backoff=10.0, max_backoff=15.0, sleep=waits.append) is False
    assert len(r.requests) == 4
    assert waits == [10.0, 15.0, 15.0]  # capped
    assert SIGNATURE_HEADER not in r.requests[0]["headers"]  # no secret configured: unsigned


def test_client_error_is_not_retried_but_429_is(receiver_factory: Any) -> None:
    r = receiver_factory([404])
    assert deliver(r.url, PAYLOAD, SECRET, retries=5, sleep=lambda s: None) is False
    assert len(r.requests) == 1
    r2 = receiver_factory([429, 204])
    assert deliver(r2.url, PAYLOAD, SECRET, retries=5, sleep=lambda s: None) is True
    assert len(r2.requests) == 2


def test_unreachable_or_bad_url_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    from spotlight.ops.redis_server import free_port

    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    assert deliver(url, PAYLOAD, SECRET, retries=2, sleep=lambda s: None, timeout=2) is False
    assert deliver("not a url", PAYLOAD, SECRET, retries=2, sleep=lambda s: None) is False
    assert deliver(url, {"x": float("nan")}, SECRET, retries=1) is False  # unencodable payload
    assert "webhook" in caplog.text
    assert "token" not in caplog.text


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    import hashlib
    import hmac

    body = encode_body(PAYLOAD)
    assert sign(body, SECRET) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_signature(body, None, SECRET)
    assert not verify_signature(body, "sha256=" + "0" * 64, SECRET)
    assert not verify_signature(body, sign(body, SECRET), "")


def test_with_settings_the_callback_goes_through_the_ssrf_guard(receiver_factory: Any, tmp_path: Any) -> None:
    from spotlight.server.settings import Settings

    r = receiver_factory([200])
    strict = Settings(data_dir=tmp_path, allowed_hosts=["127.0.0.1"], allow_private_addresses=False)
    waits: list[float] = []
    assert deliver(r.url, PAYLOAD, SECRET, retries=3, settings=strict, sleep=waits.append) is False
    assert r.requests == [] and waits == []  # refused before any connection, and not retried
    allowed = Settings(data_dir=tmp_path, allowed_hosts=["127.0.0.1"], allow_private_addresses=True)
    assert deliver(r.url, PAYLOAD, SECRET, retries=3, settings=allowed) is True
    assert len(r.requests) == 1
    assert verify_signature(r.requests[0]["body"], r.requests[0]["headers"][SIGNATURE_HEADER], SECRET)


# What README.md ("Webhooks") promises a receiver that is down, with the default settings: up to ~65 s
# of attempts, 5 attempts of at most 10 s each, backoff 1-8 s between them. Written out here, not
# computed by the code under test, so that a change to either side turns this red.
DOCUMENTED_ATTEMPTS = 5
DOCUMENTED_ATTEMPT_TIMEOUT_S = 10.0
DOCUMENTED_BACKOFF_S = [1.0, 2.0, 4.0, 8.0]
DOCUMENTED_TOTAL_S = 65.0


def test_a_receiver_that_is_down_gets_the_documented_attempts_and_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callbacks worker's task with the default settings: each run is one attempt bounded by the
    documented timeout, and the delivery's RQ job carries the documented waits as RQ's retry intervals
    (the worker does not sleep through them: another delivery runs meanwhile)."""
    from rq import Retry

    from spotlight.server import jobqueue
    from spotlight.server.settings import Settings
    from worker import webhook

    monkeypatch.delenv("SPOTLIGHT_WEBHOOK_RETRIES", raising=False)
    monkeypatch.delenv("SPOTLIGHT_WEBHOOK_TIMEOUT_S", raising=False)
    attempts: list[float] = []

    def attempt(url: str, body: bytes, headers: dict[str, str], timeout: float, settings: Any) -> str:
        attempts.append(timeout)
        return "retry"  # a receiver that is down: every attempt is worth another

    monkeypatch.setattr(webhook, "_attempt", attempt)
    with pytest.raises(webhook.DeliveryFailed):  # RQ retries the job after its interval
        webhook.deliver_callback("https://receiver.example/hook", PAYLOAD, "job_1")
    assert attempts == [DOCUMENTED_ATTEMPT_TIMEOUT_S]

    settings = Settings()
    backoff = jobqueue.callback_backoff_s(settings)
    assert backoff == DOCUMENTED_BACKOFF_S and len(backoff) + 1 == DOCUMENTED_ATTEMPTS
    assert DOCUMENTED_ATTEMPTS * DOCUMENTED_ATTEMPT_TIMEOUT_S + sum(backoff) == DOCUMENTED_TOTAL_S
    retry = Retry(max=len(backoff), interval=backoff)
    assert (retry.max, retry.intervals) == (DOCUMENTED_ATTEMPTS - 1, [int(w) for w in DOCUMENTED_BACKOFF_S])
    # the RQ job that carries one attempt outlives it, but not by minutes
    assert DOCUMENTED_ATTEMPT_TIMEOUT_S <= jobqueue.callback_timeout_s(settings) <= DOCUMENTED_ATTEMPT_TIMEOUT_S + 60
