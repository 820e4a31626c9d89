"""What the client, the API and the worker agree on: parameters, records, job spec and states, errors,
column names, and the kernel math that scores a region. pydantic and numpy only; it imports nothing
of ours outside itself, so every side may import it.

    params.py           SearchParams, the engine's validated parameters
    records.py          the typed region record the worker writes, the API serves and the client reads
    protocol.py         store layout, JobSpec, job meta keys, error codes, timestamps, the RQ task path
    jobstate.py         a job's status and failure cause: the one place they are decided
    errors.py           domain errors with a stable `code` (service/errors.py maps them to HTTP)
    client_errors.py    SpotlightError, what the client raises (the column rules raise it too)
    kernel.py, evidence.py, members.py   a region's kernel weight, label evidence, member rule (numpy)
    contribution.py     weight x (loss - reference): how members are ranked
    columns.py, classes.py   which column holds which field; class names stored as integer codes
    verdict.py          is a region more than noise (held-out test)
    compare.py          weak spots across two runs: fixed, new, still there
    logs.py             one log format for every process (API, worker, CLI)
"""
