"""The HTTP edge of the Spotlight service (FastAPI). It never imports the worker or torch.

app.py              create_app(settings) -> FastAPI; `uvicorn service.app:create_app --factory`
cli.py              `spotlight api` and `spotlight openapi`
expiry.py           results past their TTL leave Redis and the store together; stale upload folders
routers/            one APIRouter per resource: datasets, jobs, results, score, compare, ops; each parses, calls
                    one domain function and returns (errors are domain errors, spotlight/contract/errors.py)
job_results.py      a finished job's stored results as the result routes read them (regions, member pages,
                    weights, report)
job_submission.py   the checks a job passes before it is queued (fit, device, cost, memory, callback);
                    submit and cancel
idempotency.py      Idempotency-Key for the routes that create something (jobs, comparisons): one driver
dataset_source.py   the stored dataset a body names (id, inline arrays, or a reference in a slot)
dataset_deletion.py deleting a dataset takes its jobs' results with it
readiness.py        /readyz: a write to Redis and to the store
downloads.py        a stored .npy as a streamed download
scoring.py          weights and membership of other rows in a job's regions (POST /v1/jobs/{id}/score)
comparing.py        weak spots across two jobs, or drift of new rows into a job's regions (POST .../compare)
compare_report.py   a stored comparison as an HTML page (Jinja2, autoescape)
deps.py             settings, Redis, store, tenant and registries as Annotated dependencies
auth.py             API keys (hashed, constant-time compare) -> tenant
errors.py           every error response, in the contract's {"error": {code, message, details}}: the one
                    table from a domain error's code to its HTTP status
limits.py           body size limits enforced while the body streams in
request_log.py      one JSON access-log line per request, with its request id
ingest/             upload -> validated canonical dataset files (streamed, chunked, no pickle)
dataset_registry.py dataset records in Redis + content-addressed, refcounted blobs in the store
job_registry.py     RQ jobs: submit (cap, idempotency), status view, list, cancel
schemas.py          request/response bodies
openapi_export.py   the spec as stable JSON (openapi/openapi.json is generated from it)
"""
