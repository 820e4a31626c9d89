"""Job callbacks: POST a signed JSON summary to the job's `callback_url` when it ends.

The body is signed with HMAC-SHA256 over its exact bytes, keyed by the operator's
``webhook_secret``, and sent as ``X-Spotlight-Signature: sha256=<hex>`` — the form GitHub and
Stripe use, so receivers already know how to check it: recompute the HMAC over the raw body they
received (before any JSON parsing) and compare in constant time (:func:`verify_signature`).

Delivery is best effort by design: a receiver that is down, slow or answering 5xx is retried with
exponential backoff (bounded: at most `retries` attempts, each wait capped), and if it never
answers 2xx the failure is logged. A broken receiver never fails a job that has already succeeded.
A 4xx other than 408/429 is not retried: the receiver has said it will not take this body.

On the callbacks queue each *attempt* is one run of the delivery's RQ job (:func:`deliver_callback`):
a failed attempt raises `DeliveryFailed` and RQ's own ``Retry`` (with the backoff as its intervals,
spotlight/server/jobqueue.py) schedules the next one, so the worker goes on with the other deliveries while
a receiver is down. Why: one callbacks worker used to sleep through a hanging receiver's whole
schedule (5 attempts, ~65 s) while every other tenant's webhook waited behind it; now another
delivery waits for at most one attempt (``webhook_timeout_s``) of each one ahead of it.
:func:`deliver` keeps the whole schedule in one call, for callers outside RQ.

Outbound URLs go through the SSRF guard (spotlight/server/netguard.py): the address
is checked and pinned on every attempt, so a name that re-resolves to an internal address is
refused. ``deliver(..., settings=None)`` posts directly (tests and trusted setups).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from spotlight.server.netguard import guarded_request

log = logging.getLogger("spotlight.worker.webhook")

SIGNATURE_HEADER = "X-Spotlight-Signature"
EVENT_HEADER = "X-Spotlight-Event"
DELIVERY_HEADER = "X-Spotlight-Delivery"
MAX_BACKOFF_S = 60.0
_RETRYABLE_4XX = {408, 425, 429}


def sign(body: bytes, secret: str) -> str:
    """The header value for `body`: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when `header` is the signature of `body` under `secret` (constant-time compare).

    Receivers call this with the raw request body, exactly as received.
    """
    if not header or not secret:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.strip().encode())


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, UTF-8, never NaN."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str).encode()


def job_summary(
    spec: dict[str, Any],
    status: str,
    error: dict[str, Any] | None,
    regions: list[dict[str, Any]] | None,
    urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The callback payload: what ended, how, and the regions' headline numbers (no big arrays).

    `spec` is the JobSpec as JSON; `regions` the regions.json entries (None when the job failed);
    `urls` optional links (e.g. {"regions": ..., "report": ...}) when the worker knows the API's base URL.
    """
    body: dict[str, Any] = {
        "event": f"job.{status}",
        "job": {
            "id": spec.get("job_id"),
            "status": status,
            "dataset": spec.get("dataset_id"),
            "created_at": spec.get("created_at"),
            "params": spec.get("params"),
            "error": error,
        },
        "regions": [
            {
                key: r.get(key)
                for key in (
                    "index",
                    "significant",
                    "p_value",
                    "mean_loss",
                    "lift",
                    "weighted_loss",
                    "weighted_lift",
                    "n_members",
                    "n_holdout_members",
                )
                if key in r
            }
            for r in (regions or [])
        ],
    }
    if regions is not None:  # the job's verdict: "no weak spot found" is a result too
        body["weak_spot_found"] = any(r.get("significant") is True for r in regions)
    if urls:
        body["links"] = dict(urls)
    return body


class DeliveryFailed(Exception):
    """One attempt of a delivery failed in a way worth another: RQ runs the job again after its backoff."""


def _request(
    url: str, payload: dict[str, Any], secret: str | None, delivery_id: str | None
) -> tuple[bytes, dict[str, str]] | None:
    """The exact body and headers of a delivery; None (logged) when the payload is not JSON."""
    try:
        body = encode_body(payload)
    except (TypeError, ValueError) as exc:
        log.error("webhook payload is not JSON, not delivered: %s", exc, extra={"callback": _redact(url)})
        return None
    headers = {"Content-Type": "application/json", "User-Agent": "spotlight-webhook/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    if payload.get("event"):
        headers[EVENT_HEADER] = str(payload["event"])
    if delivery_id:
        headers[DELIVERY_HEADER] = delivery_id
    return body, headers


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: str | None,
    retries: int = 5,
    backoff: float = 1.0,
    *,
    timeout: float = 10.0,
    settings: Any = None,
    max_backoff: float = MAX_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    delivery_id: str | None = None,
) -> bool:
    """POST `payload` as signed JSON to `url`; True once the receiver answers 2xx. Never raises.

    Attempts: up to `retries` (at least 1). After failed attempt i (0-based) it waits
    ``min(max_backoff, backoff * 2**i)`` seconds. The signature header is sent only when `secret`
    is set. `settings` (the worker's Settings) routes the request through the SSRF guard when
    given; a URL the guard refuses is logged and not retried.
    """
    request = _request(url, payload, secret, delivery_id)
    if request is None:
        return False
    body, headers = request
    attempts = max(1, int(retries))
    for attempt in range(attempts):
        outcome = _attempt(url, body, headers, timeout, settings)
        if outcome == "ok":
            log.info("webhook delivered", extra={"callback": _redact(url), "attempt": attempt + 1})
            return True
        if outcome == "final":
            return False
        if attempt + 1 < attempts:
            sleep(min(max_backoff, backoff * (2**attempt)))
    log.warning("webhook not delivered after %d attempts", attempts, extra={"callback": _redact(url)})
    return False


def deliver_callback(url: str, payload: dict[str, Any], delivery_id: str) -> bool:
    """The RQ task behind `spotlight.server.jobqueue.enqueue_callback`: one attempt of one job's webhook, with
    the worker's secret, attempt timeout and SSRF guard. Runs in a callbacks worker, never in a search.

    True when delivered, False when the receiver refused it for good (a 4xx, a URL the guard refuses);
    raises `DeliveryFailed` when another attempt is worth it, which RQ schedules (the job's Retry) or,
    after the last attempt, records as failed.
    """
    from rq import get_current_job

    from spotlight.server.settings import get_settings

    settings = get_settings()
    request = _request(url, payload, settings.webhook_secret, delivery_id)
    if request is None:
        return False
    outcome = _attempt(url, request[0], request[1], settings.webhook_timeout_s, settings)
    job = get_current_job()
    attempt = 1 + ((job.number_of_retries or 0) if job is not None else 0)
    if outcome == "ok":
        log.info("webhook delivered", extra={"callback": _redact(url), "attempt": attempt})
        return True
    if outcome == "final":
        return False
    left = job.retries_left if job is not None else 0
    if not left:
        log.warning("webhook not delivered after %d attempts", attempt, extra={"callback": _redact(url)})
    raise DeliveryFailed(f"attempt {attempt} failed; {left or 0} more to come")


def _attempt(url: str, body: bytes, headers: dict[str, str], timeout: float, settings: Any) -> str:
    """One POST: 'ok', 'retry' (worth another try) or 'final' (never worth retrying)."""
    try:
        if settings is not None:
            with guarded_request(
                "POST", url, settings, "callback", headers=headers, content=body, timeout=httpx.Timeout(timeout)
            ) as response:
                status = response.status_code
        else:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                status = client.post(url, content=body, headers=headers).status_code
    except httpx.HTTPError as exc:
        log.warning("webhook attempt failed: %s", type(exc).__name__, extra={"callback": _redact(url)})
        return "retry"
    except ValueError as exc:  # the guard's URLRefused (a ValueError), or a malformed URL
        log.warning("webhook refused: %s", exc, extra={"callback": _redact(url)})
        return "final"
    except Exception as exc:  # noqa: BLE001 - a callback must never fail the job
        log.warning("webhook attempt failed: %r", exc, extra={"callback": _redact(url)})
        return "retry"
    if 200 <= status < 300:
        return "ok"
    log.warning("webhook answered %d", status, extra={"callback": _redact(url)})
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return "final"
    return "retry"


def _redact(url: str) -> str:
    """The URL without credentials or query (callback URLs often carry a token)."""
    try:
        u = httpx.URL(url)
        return str(u.copy_with(userinfo=b"", query=None, fragment=None))
    except Exception:  # noqa: BLE001
        return "<unparseable url>"
