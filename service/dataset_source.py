"""The stored dataset a request body names, for submitting a job and for scoring alike.

A body names its rows as a dataset id, inline arrays or a reference (`DatasetSpec`); the last two are
ingested and registered first, a reference in one of the tenant's reference slots (reading it holds a
thread for up to `reference_timeout_s`, service/limits.py).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from service.dataset_registry import DatasetRegistry
from service.ingest import build_from_spec, workspace
from service.schemas import DatasetReference, InlineDataset
from spotlight.protocol import DatasetRecord
from spotlight.settings import Settings
from spotlight.store import ArtifactStore

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
