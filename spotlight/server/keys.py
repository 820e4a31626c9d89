"""Every Redis key of ours, each builder beside its inverse, all under one deployment's namespace.

Two deployments may share one Redis (``SPOTLIGHT_NAMESPACE``): every key here starts with
``<namespace>:spotlight:`` (``spotlight:`` without a namespace), locks included, so they never
read, block or delete each other's state. RQ keeps its own keys under ``rq:``; ours name its queue
(``rq_queue``), which carries the namespace too.

A `Keys` is built once at the edge from the settings (``Keys.of(settings)``) and passed down;
nothing below the edge reads the process's global settings to build a key. Each inverse returns
the part a builder took (``tenant_of_jobs(tenant_jobs("a")) == "a"``) and raises ValueError on a
key that builder did not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

KEY_PREFIX = "spotlight"  # behind "<namespace>:" when one is set
DEFAULT_QUEUE = "spotlight"  # Settings.queue_name's default


class _NamespaceSettings(Protocol):
    namespace: str
    queue_name: str


def _between(key: str, head: str, tail: str = "") -> str:
    """The part of `key` between `head` and `tail`; ValueError when `key` is not of that form."""
    if not (key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail)):
        raise ValueError(f"{key!r} is not a key of the form {head}...{tail}")
    return key[len(head) : len(key) - len(tail)]


@dataclass(frozen=True)
class Keys:
    """The keys of one deployment: `namespace` ("" for none) and its queue's name."""

    namespace: str = ""
    queue: str = DEFAULT_QUEUE

    @classmethod
    def of(cls, settings: _NamespaceSettings) -> Keys:
        return cls(settings.namespace, settings.queue_name)

    def _ns(self, name: str) -> str:
        return f"{self.namespace}:{name}" if self.namespace else name

    @property
    def prefix(self) -> str:
        """Start of every key of ours: ``spotlight``, behind ``<namespace>:`` when one is set."""
        return self._ns(KEY_PREFIX)

    @property
    def rq_queue(self) -> str:
        """The RQ queue's name: ``queue``, behind ``<namespace>:`` when one is set."""
        return self._ns(self.queue)

    @property
    def large_queue(self) -> str:
        """The search queue's large lane: jobs estimated above `large_job_cost` (spotlight/server/cost.py).
        Search workers listen to both lanes and take from them in turn (RQ's round-robin dequeue)."""
        return f"{self.rq_queue}-large"

    @property
    def reports_queue(self) -> str:
        """Where finished jobs wait for their report to be rendered (spotlight/server/jobqueue.py `report_queue`)."""
        return f"{self.rq_queue}-reports"

    @property
    def callbacks_queue(self) -> str:
        """Where finished jobs' webhooks wait for delivery (spotlight/server/jobqueue.py `callback_queue`)."""
        return f"{self.rq_queue}-callbacks"

    # ----- datasets -----
    def dataset(self, dataset_id: str) -> str:
        """JSON of a DatasetRecord."""
        return f"{self.prefix}:dataset:{dataset_id}"

    def dataset_id_of(self, key: str) -> str:
        return _between(key, f"{self.prefix}:dataset:")

    def tenant_datasets(self, tenant: str) -> str:
        """Sorted set of the tenant's dataset ids, scored by creation time."""
        return f"{self.prefix}:tenant:{tenant}:datasets"

    def tenant_of_datasets(self, key: str) -> str:
        return _between(key, f"{self.prefix}:tenant:", ":datasets")

    def tenant_bytes(self, tenant: str) -> str:
        """Bytes of dataset content the tenant's records hold (its storage quota's count)."""
        return f"{self.prefix}:tenant:{tenant}:bytes"

    def tenant_of_bytes(self, key: str) -> str:
        return _between(key, f"{self.prefix}:tenant:", ":bytes")

    def blob_refs(self, sha256: str) -> str:
        """Set of dataset ids that point at one stored content; the blob is deleted with the last."""
        return f"{self.prefix}:blob:{sha256}:refs"

    def sha256_of_blob_refs(self, key: str) -> str:
        return _between(key, f"{self.prefix}:blob:", ":refs")

    def blob_lock(self, sha256: str) -> str:
        """Held while one content is committed or deleted (service/dataset_registry.py)."""
        return f"{self.prefix}:lock:blob:{sha256}"

    def sha256_of_blob_lock(self, key: str) -> str:
        return _between(key, f"{self.prefix}:lock:blob:")

    # ----- jobs -----
    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of the tenant's job ids, scored by creation time."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def tenant_of_jobs(self, key: str) -> str:
        return _between(key, f"{self.prefix}:tenant:", ":jobs")

    def tenant_jobs_pattern(self) -> str:
        """SCAN pattern matching every tenant's `tenant_jobs` key."""
        return self.tenant_jobs("*")

    def tenant_active(self, tenant: str) -> str:
        """Set of the tenant's job ids that may be queued or running (the API prunes it on submit)."""
        return f"{self.prefix}:tenant:{tenant}:active"

    def tenant_of_active(self, key: str) -> str:
        return _between(key, f"{self.prefix}:tenant:", ":active")

    def tenant_active_pattern(self) -> str:
        """SCAN pattern matching every tenant's `tenant_active` key."""
        return self.tenant_active("*")

    def tenant_status(self, tenant: str, status: str) -> str:
        """Sorted set of the tenant's ended job ids in one terminal status, scored by creation time
        (service/job_registry.py moves a job here from `tenant_active` once it has ended)."""
        return f"{self.prefix}:tenant:{tenant}:status:{status}"

    def tenant_and_status_of_status(self, key: str) -> tuple[str, str]:
        tenant, sep, status = _between(key, f"{self.prefix}:tenant:").partition(":status:")
        if not (sep and tenant and status):
            raise ValueError(f"{key!r} is not a status key")
        return tenant, status

    def tenant_status_indexed(self, tenant: str) -> str:
        """Present once the tenant's jobs from before the status index have been indexed."""
        return f"{self.prefix}:tenant:{tenant}:status-indexed"

    def tenant_of_status_indexed(self, key: str) -> str:
        return _between(key, f"{self.prefix}:tenant:", ":status-indexed")

    def submit_lock(self, tenant: str) -> str:
        """Held while one tenant's submission checks its limits and enqueues."""
        return f"{self.prefix}:lock:submit:{tenant}"

    def tenant_of_submit_lock(self, key: str) -> str:
        return _between(key, f"{self.prefix}:lock:submit:")

    def cost(self, tenant: str) -> str:
        """Hash job id -> cost of the tenant's jobs that may still be queued or running."""
        return f"{self.prefix}:cost:{tenant}"

    def tenant_of_cost(self, key: str) -> str:
        return _between(key, f"{self.prefix}:cost:")

    def cancel(self, job_id: str) -> str:
        """Present when the caller asked to cancel; the worker checks it between steps."""
        return f"{self.prefix}:cancel:{job_id}"

    def job_id_of_cancel(self, key: str) -> str:
        return _between(key, f"{self.prefix}:cancel:")

    def idempotency(self, tenant: str, key: str) -> str:
        """(body hash, job id, pending|queued) of an ``Idempotency-Key`` request: claimed pending (SET NX,
        short TTL) by the one request that makes the job, then queued for as long as results live
        (service/job_registry.py)."""
        return f"{self.prefix}:idem:{tenant}:{key}"

    def tenant_and_key_of_idempotency(self, redis_key: str) -> tuple[str, str]:
        """The tenant and the caller's key (tenant names hold no ':'; the caller's key may)."""
        tenant, sep, key = _between(redis_key, f"{self.prefix}:idem:").partition(":")
        if not (sep and tenant and key):
            raise ValueError(f"{redis_key!r} is not an idempotency key")
        return tenant, key

    def yield_claim(self, waiting_job_id: str) -> str:
        """Claimed by the one running search that gives its worker to `waiting_job_id` (spotlight/server/jobqueue.py)."""
        return f"{self.prefix}:yield-for:{waiting_job_id}"

    def job_id_of_yield_claim(self, key: str) -> str:
        return _between(key, f"{self.prefix}:yield-for:")

    @property
    def reports_pending(self) -> str:
        """Set of the report jobs queued and not yet ended (spotlight/server/jobqueue.py `enqueue_report`): the
        candidates spotlight/server/stranded.py sweeps besides the tenants' active searches."""
        return f"{self.prefix}:reports-pending"

    def unheld_since(self, job_id: str) -> str:
        """When a sweep first saw `job_id` queued yet in no lane (spotlight/server/stranded.py)."""
        return f"{self.prefix}:unheld-since:{job_id}"

    def job_id_of_unheld_since(self, key: str) -> str:
        return _between(key, f"{self.prefix}:unheld-since:")

    def comparison(self, tenant: str, comparison_id: str) -> str:
        """The job whose store folder holds the tenant's comparison (service/comparing.py); lives as long
        as results do."""
        return f"{self.prefix}:tenant:{tenant}:comparison:{comparison_id}"

    def tenant_and_id_of_comparison(self, key: str) -> tuple[str, str]:
        tenant, sep, comparison_id = _between(key, f"{self.prefix}:tenant:").partition(":comparison:")
        if not (sep and tenant and comparison_id):
            raise ValueError(f"{key!r} is not a comparison key")
        return tenant, comparison_id

    # ----- expiry (service/expiry.py) -----
    def expiry_lock(self) -> str:
        """Held by the one process sweeping right now."""
        return f"{self.prefix}:lock:expiry"

    def expiry_pending(self) -> str:
        """Job ids whose store folder still has to go."""
        return f"{self.prefix}:expiry:pending"

    # ----- readiness (service/routers/ops.py) -----
    def ready_probe(self) -> str:
        """Written by /readyz: a Redis that answers PING but refuses writes (disk full: MISCONF) is not ready."""
        return f"{self.prefix}:ready-probe"

    # ----- workers and statistics -----
    def cuda_devices(self) -> str:
        """Hash worker name -> CUDA devices it sees (spotlight/server/capabilities.py)."""
        return f"{self.prefix}:workers:cuda_devices"

    def stats(self) -> str:
        """Start of the queue's job and HTTP statistics keys (spotlight/server/jobstats.py, service/http_metrics.py)."""
        return f"{self.prefix}:stats:{self.rq_queue}"

    def stats_hist(self, metric: str, label: str) -> str:
        return f"{self.stats()}:hist:{metric}:{label}"

    def metric_and_label_of_stats_hist(self, key: str) -> tuple[str, str]:
        metric, sep, label = _between(key, f"{self.stats()}:hist:").partition(":")
        if not (sep and metric and label):
            raise ValueError(f"{key!r} is not a histogram key")
        return metric, label

    def stats_ended(self) -> str:
        return f"{self.stats()}:ended"

    def stats_worker(self, worker_name: str) -> str:
        return f"{self.stats()}:worker:{worker_name}"

    def worker_of_stats(self, key: str) -> str:
        return _between(key, f"{self.stats()}:worker:")

    def http_index(self) -> str:
        """Set of the HTTP series the API processes recorded."""
        return f"{self.stats()}:http"

    def http_series(self, series: str) -> str:
        return f"{self.http_index()}:{series}"

    def series_of_http(self, key: str) -> str:
        return _between(key, f"{self.http_index()}:")
