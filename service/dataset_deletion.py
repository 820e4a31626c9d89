"""Deleting a dataset takes every artefact derived from its rows with it.

Its record goes (and, with the last record sharing it, its content: DatasetRegistry.delete); each of
the tenant's jobs that searched it is stopped when queued or running, and its stored results (members,
weights, report, regions, comparisons) are purged (service/expiry.py). The jobs' records stay, so
their result routes can answer `Gone` (dataset_gone) rather than a bare not-found.
"""

from __future__ import annotations

from service.dataset_registry import DatasetRegistry
from service.expiry import purge_results
from service.job_registry import JobRegistry
from spotlight.server.store import ArtifactStore


def delete_dataset(
    datasets: DatasetRegistry, jobs: JobRegistry, store: ArtifactStore, tenant: str, dataset_id: str
) -> None:
    datasets.delete(tenant, dataset_id)
    for job in jobs.jobs_of_dataset(tenant, dataset_id):
        jobs.stop_for_deleted_dataset(tenant, job)
        purge_results(jobs.r, jobs.keys, store, job.id)
