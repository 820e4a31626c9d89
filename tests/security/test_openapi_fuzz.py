"""Schemathesis against the live API's own OpenAPI document: generated requests (valid and not)
for every operation never get a 5xx, and every response matches the documented status codes,
content types and schemas. Bounded: a few examples per operation, no shrinking.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from .stack import Stack

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25
KEY = "fuzz-tenant-key"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    refs = root / "refs"
    refs.mkdir()
    s = Stack(root, SPOTLIGHT_API_KEYS=f"fuzz:{KEY}", SPOTLIGHT_ALLOWED_ROOTS=f'["{refs}"]',
              SPOTLIGHT_MAX_UPLOAD_BYTES=2 * 1024 * 1024, SPOTLIGHT_MAX_INLINE_BYTES=1024 * 1024)
    s.start_redis()
    try:
        s.start_api()
        with s.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
            ds = s.upload(c)  # so that some generated ids and bodies meet real objects
            s.submit(c, ds)
        yield s
    finally:
        s.close()


def fuzz_operation(operation: schemathesis.APIOperation, mode: GenerationMode, live: Stack) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS,
                               timeout=30)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_5xx_and_responses_match_the_schema(live: Stack, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tested += 1
        if mode == GenerationMode.NEGATIVE and not (list(operation.query) or list(operation.body)):
            continue  # only a free-form path id: any string is valid, nothing invalid to send
        try:
            fuzz_operation(operation, mode, live)
        except Unsatisfiable:  # nothing invalid to send (e.g. only a free-form path id): not a failure
            continue
        except Exception as exc:  # collect every operation's first failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert tested >= 10
    assert not failures, "\n\n".join(failures)
