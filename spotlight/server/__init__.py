"""The API's and the worker's runtime (the `server` or `worker` extra): what both processes need and
the client never does. It imports the contract, never the client, `service/` or `worker/`.

    settings.py         Settings: every environment variable, in one class (settings_errors.py reads
                        them for a person; settings_doc.py writes the README table; refusal_hints.py
                        names the setting a refusal needs)
    commands.py, binding.py   the server commands' shared start (logging from Settings); who may bind
    keys.py             every Redis key of ours, each beside its inverse, under the deployment's namespace
    store.py            the artifact store (a folder or any fsspec URL), atomic writes
    dataset_files.py    a stored dataset's files, memory-mapped
    jobqueue.py         enqueueing on RQ and what a job's meta says when its worker vanishes
    stranded.py         queued jobs no lane holds any more, found and queued again
    jobstats.py         job timings and worker devices in Redis, for /metrics
    capabilities.py     what the live workers can compute on, so the API refuses what none can run
    cost.py             a job's cost and memory, checked at submission
    refs.py, netguard.py   references and callbacks, only where the operator allows
    text_terms.py       regions described in words (worker)
    process.py          children that die with their parent
"""
