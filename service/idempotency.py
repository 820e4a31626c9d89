"""`Idempotency-Key` for the routes that create something (a job, a comparison): one key, one thing.

The claim itself (pending, then queued, compare-and-set in Redis) is JobRegistry's; this module is
the one place that drives it, so submitting a job and creating a comparison cannot drift apart on
what a retry, an expired target or a failed first attempt does to the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from service.job_registry import JobRegistry, body_hash
from spotlight.contract.errors import NotFound

T = TypeVar("T")


def once(
    jobs: JobRegistry,
    tenant: str,
    key: str | None,
    body: dict[str, Any],
    new_id: str,
    replay: Callable[[str], T],
    create: Callable[[], T],
) -> tuple[T, bool]:
    """`create()` (which makes `new_id`) unless `key` already names an earlier one: then `replay`
    of that id, and True. Without a key, `create()` alone. A key whose earlier target expired
    (`replay` raises NotFound) is free again and claimed for this request; a failed `create()` frees
    the claim, so a retry with the same key tries again rather than replaying a failure."""
    if key is None:
        return create(), False
    digest = body_hash(body)
    while True:  # until this request holds the key, or replays what it names
        earlier = jobs.claim_idempotency(tenant, key, digest, new_id)
        if earlier is None:
            break
        try:
            return replay(earlier), True
        except NotFound:
            jobs.release_idempotency(tenant, key, earlier, pending=False)
    try:
        made = create()
    except BaseException:
        jobs.release_idempotency(tenant, key, new_id)
        raise
    jobs.complete_idempotency(tenant, key, digest, new_id)
    return made, False
