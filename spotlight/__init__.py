"""Spotlight's shared package, split by who uses it (docs/layout.md):

    contract/   what the client, the API and the worker agree on: pydantic + numpy, nothing of ours outside it
    client/     what `pip install spotlight-service` brings: the client, its tables, the `spotlight` command
    server/     the API's and the worker's runtime: settings, store, Redis keys, queue, references, cost
    ops/        `spotlight up` and the Redis it embeds

Each imports only the ones below it (contract <- client; contract <- server <- ops), and none of
them imports `service/` or `worker/` (tests/test_packaging.py). The client and the `spotlight`
command need only the base install; server/ and ops/ need the `server` or `worker` extra.

The one name here besides the parts is for RQ: a job queued before the split holds its failure
callback as "spotlight.jobqueue.on_job_failure" (or on_report_failure) in Redis, and RQ resolves
that path attribute by attribute from this package when the job fails. `__getattr__` hands it
spotlight.server.jobqueue, so such a job still records its cause after an upgrade; new jobs name
spotlight.server.jobqueue. Drop it once no queue holds a job enqueued before the split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if not TYPE_CHECKING:  # for RQ only: type checkers see no attribute beyond the parts

    def __getattr__(name: str) -> Any:
        if name == "jobqueue":
            from spotlight.server import jobqueue

            return jobqueue
        raise AttributeError(f"module 'spotlight' has no attribute {name!r}")
