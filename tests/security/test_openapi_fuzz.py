"""Schemathesis against the live API's own OpenAPI document: generated requests (valid and not)
for every operation never get a 5xx, and every response matches the documented status codes,
content types and schemas.

Seeded with real objects so that success is reached, not only refusals: before fuzzing, a
dataset is uploaded and a job runs to the end on a real worker; then, for about half of the
generated cases, the path's ids are replaced by those real ids (a fresh dataset or a fresh
queued job for the DELETEs, so the shared ones survive) and request bodies by a valid one; in the
valid-mode run, each operation's first case always is, so reaching a 2xx does not hang on the draws. Status
codes are counted per operation, and the valid-mode run asserts a 2xx on every operation — so
the response-schema check is known to have run on the 2xx bodies of jobs, regions, members and
weights (weights, an .npy, is also loaded and its shape checked). The job searches with
`pca_components`, so its regions are scored along its stored basis and `/basis` answers too. Bounded: a few examples per
operation, derandomised, no shrinking.

A new operation whose success needs a particular body fails the valid run ("no 2xx reached on ...")
until `Live.seed` learns a valid body for it.
"""

from __future__ import annotations

import base64
import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.runtime.helpers import wait_for

from .stack import QUICK_PARAMS, Stack, npz_bytes

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 20
KEY = "fuzz-tenant-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
N_ROWS = 120
DIM, PCA_COMPONENTS = 4, 3  # stack.npz_bytes' width; the seeded job projects on 3 of its 4 axes


@dataclass
class Live:
    stack: Stack
    dataset: str
    job: str  # finished, with QUICK_PARAMS["n_spotlights"] regions found with PCA_COMPONENTS components
    comparison: str  # the job compared with its own dataset (drift: none)
    counts: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def fresh_dataset(self) -> str:
        with self.stack.client(headers=AUTH) as c:
            return self.stack.upload(c, seed=7)

    def fresh_queued_job(self) -> str:
        with self.stack.client(headers=AUTH) as c:
            return self.stack.submit(c, self.dataset)

    def seed(self, case: schemathesis.Case, k: int, body: bool) -> None:
        """Real ids in the path (and, when `body`, a valid request body) of a generated case."""
        deleting = case.method.upper() == "DELETE"
        params = case.path_parameters or {}
        if "dataset_id" in params:
            params["dataset_id"] = self.fresh_dataset() if deleting else self.dataset
        if "job_id" in params:
            params["job_id"] = self.fresh_queued_job() if deleting else self.job
        if "k" in params:
            params["k"] = k
        if "comparison_id" in params:
            params["comparison_id"] = self.comparison
        if not body or case.body is None or case.method.upper() != "POST":
            return
        if case.path == "/v1/jobs":
            case.body = {"dataset": self.dataset, "params": {"n_spotlights": 1, "steps": 5}}
            if case.headers:  # a generated Idempotency-Key may be empty or too long: a 400 the valid body cannot fix
                case.headers.pop("Idempotency-Key", None)
        elif case.path == "/v1/jobs/{job_id}/score":  # the seeded dataset, or bare rows of its width
            case.body = {"dataset": self.dataset} if k == 0 else {"embeddings": [[0.5, -1.0, 2.0, 0.0]] * 3}
        elif case.path == "/v1/jobs/{job_id}/compare":
            case.body = {"dataset": self.dataset}
        elif case.path == "/v1/datasets":
            if case.media_type == "application/json":
                rng = np.random.default_rng(k)
                case.body = {
                    "embeddings": rng.normal(size=(12, 3)).round(3).tolist(),
                    "losses": rng.random(12).round(3).tolist(),
                }
            else:
                case.body = {"file": npz_bytes(n=30, seed=k)}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    refs = root / "refs"
    refs.mkdir()
    s = Stack(
        root,
        SPOTLIGHT_API_KEYS=f"fuzz:{KEY}",
        SPOTLIGHT_ALLOWED_ROOTS=f'["{refs}"]',
        SPOTLIGHT_MAX_UPLOAD_BYTES=2 * 1024 * 1024,
        SPOTLIGHT_MAX_INLINE_BYTES=1024 * 1024,
        SPOTLIGHT_MAX_ACTIVE_JOBS_PER_TENANT=100_000,
    )
    s.start_redis()
    try:
        s.start_api()
        s.start_worker("w1")
        with s.client(headers=AUTH) as c:
            ds = s.upload(c, n=N_ROWS)
            job = s.submit(c, ds, {**QUICK_PARAMS, "pca_components": PCA_COMPONENTS})
            assert s.wait_ended(c, job, 90)["status"] == "finished", s.log("w1")
            # the report is rendered after the job, by the same worker: keep it until the page is stored
            wait_for(lambda: c.get(f"/v1/jobs/{job}/report").status_code == 200, 90, "the job's report")
            comparison = c.post(f"/v1/jobs/{job}/compare", json={"dataset": ds})
            assert comparison.status_code == 201, comparison.text
        s.kill("w1")  # from here jobs stay queued: cancelable, and no search competes with the fuzzing
        yield Live(s, ds, job, comparison.json()["id"])
    finally:
        s.close()


def check_2xx_body(operation: schemathesis.APIOperation, response: object) -> None:
    """What the schema cannot say about a 2xx body that is not JSON."""
    if operation.path.endswith("/weights"):
        weights = np.load(io.BytesIO(response.content), allow_pickle=False)  # type: ignore[attr-defined]
        assert weights.dtype == np.float32 and weights.shape == (N_ROWS, QUICK_PARAMS["n_spotlights"])
    if operation.path.endswith("/basis"):
        basis = np.load(io.BytesIO(response.content), allow_pickle=False)  # type: ignore[attr-defined]
        assert basis.dtype == np.float64 and basis.shape == (DIM, PCA_COMPONENTS)


def fuzz_operation(operation: schemathesis.APIOperation, mode: GenerationMode, live: Live) -> None:
    counts = live.counts[operation.label]

    @given(
        case=operation.as_strategy(generation_mode=mode),
        seed=st.booleans(),
        body=st.booleans(),
        k=st.integers(0, QUICK_PARAMS["n_spotlights"] - 1),
    )
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case, seed: bool, body: bool, k: int) -> None:
        # Valid mode: real ids and a valid body until the operation has answered a 2xx once (a new
        # parameter anywhere in the schema changes every later draw, and a few generated draws are too
        # few to count on seed and body both coming up), then as drawn.
        force = mode == GenerationMode.POSITIVE and not any(200 <= code < 300 for code in counts)
        if seed or force:  # in invalid mode only the ids: a valid body would replace the invalid part
            live.seed(case, k, (body or force) and mode == GenerationMode.POSITIVE)
        response = case.call(base_url=live.stack.url, headers=AUTH, timeout=30)
        counts[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if 200 <= response.status_code < 300:
            check_2xx_body(operation, response)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_5xx_and_responses_match_the_schema(live: Live, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.stack.url}/openapi.json")
    failures: list[str] = []
    labels: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        if mode == GenerationMode.NEGATIVE and not (list(operation.query) or list(operation.body)):
            continue  # only a free-form path id: any string is valid, nothing invalid to send
        try:
            fuzz_operation(operation, mode, live)
        except Unsatisfiable:  # nothing invalid to send (e.g. only a free-form path id): not a failure
            continue
        except Exception as exc:  # noqa: BLE001 - collect every operation's first failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert len(labels) >= 14
    assert not failures, "\n\n".join(failures)
    seen = {label: dict(sorted(live.counts[label].items())) for label in labels}
    if mode == GenerationMode.POSITIVE:
        no_success = [label for label in labels if not any(200 <= code < 300 for code in live.counts[label])]
        assert not no_success, f"no 2xx reached on {no_success}; status codes seen: {seen}"
        for label in (
            "GET /v1/jobs/{job_id}",
            "GET /v1/jobs/{job_id}/regions",
            "GET /v1/jobs/{job_id}/regions/{k}/members",
            "GET /v1/jobs/{job_id}/weights",
        ):
            assert live.counts[label][200] > 0, seen
    else:
        fuzzed = [label for label in labels if live.counts[label]]
        assert len(fuzzed) >= 5, seen  # every operation with a query or a body got invalid requests
    live.counts.clear()


def test_the_seeded_objects_are_real(live: Live) -> None:
    """The fixture's ids name a dataset and a finished job this tenant can read (and another cannot)."""
    with live.stack.client(headers=AUTH) as c:
        assert c.get(f"/v1/datasets/{live.dataset}").json()["n"] == N_ROWS
        job = c.get(f"/v1/jobs/{live.job}").json()
        assert job["status"] == "finished" and job["dataset"] == live.dataset
    with live.stack.client(headers={"Authorization": "Bearer " + base64.b64encode(b"nobody").decode()}) as c:
        assert c.get(f"/v1/jobs/{live.job}").status_code == 401
