"""The stored dataset a request names: an upload's body, or a job's or score request's `dataset`.

A body names its rows as a dataset id, inline arrays or a reference (`DatasetSpec`); the last two are
ingested and registered first, a reference in one of the tenant's reference slots (reading it holds a
thread for up to `reference_timeout_s`, service/limits.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.dataset_registry import DatasetRegistry, checked_name, checked_tags
from service.ingest import build_from_parts, build_from_spec, build_in, receive_parts, workspace
from service.ingest.inline_json import parse_dataset_body
from service.schemas import DatasetReference, InlineDataset
from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import DatasetRecord, ErrorCode
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

if TYPE_CHECKING:  # the slots' own module is the HTTP edge's (middleware); only their type is needed here
    from service.limits import Slots


def reference_slot(slots: Slots, tenant: str, dataset: object) -> contextlib.AbstractContextManager[None]:
    """A slot of `slots` when `dataset` is a reference; nothing to take for inline arrays or an id."""
    if isinstance(dataset, DatasetReference):
        return slots.take(tenant)
    return contextlib.nullcontext()


def dataset_record(
    slots: Slots,
    tenant: str,
    dataset: str | InlineDataset | DatasetReference,
    datasets: DatasetRegistry,
    store: ArtifactStore,
    settings: Settings,
) -> DatasetRecord:
    """The dataset's record: its id looked up, or its arrays or reference ingested and registered."""
    if isinstance(dataset, str):
        return datasets.get(tenant, dataset)
    with reference_slot(slots, tenant, dataset), workspace(store) as work:
        builder, n, d = build_from_spec(dataset, work, settings)
        record, _ = datasets.register(tenant, builder, n, d)
    return record


@dataclass(frozen=True)
class DatasetSource:
    """What turns a request's `dataset` into a stored record, handed to the domain functions that take
    one (submitting a job, scoring): the registry, the store, the settings and the reference slots."""

    datasets: DatasetRegistry
    store: ArtifactStore
    settings: Settings
    slots: Slots

    def record(self, tenant: str, dataset: str | InlineDataset | DatasetReference) -> DatasetRecord:
        return dataset_record(self.slots, tenant, dataset, self.datasets, self.store, self.settings)


async def upload(
    request: Request,
    slots: Slots,
    tenant: str,
    datasets: DatasetRegistry,
    store: ArtifactStore,
    settings: Settings,
    name: str | None,
    tags: list[str] | None,
) -> tuple[DatasetRecord, bool]:
    """An upload's body (multipart files or .npy parts, inline JSON arrays, or a reference) streamed to
    disk, validated in chunks and registered: its record, and True when identical content was already
    stored. Its name and tags, and the tenant's room, are checked before a byte of the body is read."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    name, tags = checked_name(name), checked_tags(tags)  # before a byte of the body is read
    await run_in_threadpool(datasets.check_room, tenant)  # quota used up, or the disk nearly full: before a byte
    with workspace(store) as work:
        if ctype == "multipart/form-data":
            parts = await receive_parts(request, work, settings)
            builder, n, d = await run_in_threadpool(build_from_parts, parts, work, settings)
        elif ctype == "application/json" or ctype.endswith("+json"):
            # Walked in slices (service/ingest/inline_json.py): memory stays a small multiple of the body.
            parsed = await run_in_threadpool(parse_dataset_body, await request.body(), work)
            if isinstance(parsed, DatasetReference):
                with reference_slot(slots, tenant, parsed):
                    builder, n, d = await run_in_threadpool(build_from_spec, parsed, work, settings)
            else:
                builder, n, d = await run_in_threadpool(build_in, work, parsed, settings)
        else:
            raise InvalidInput(
                ErrorCode.UNSUPPORTED_MEDIA,
                "Send multipart/form-data (files) or application/json (inline arrays or a uri).",
                {"content_type": ctype or None},
            )
        record, existed = await run_in_threadpool(datasets.register, tenant, builder, n, d, name, tags)
    return record, existed
