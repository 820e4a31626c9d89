"""The single source of configuration for the API, the worker and the CLI.

Every field reads from an environment variable `SPOTLIGHT_<FIELD>` (``REDIS_URL`` is also
accepted unprefixed, as most deployments already export it). The README's configuration
table is checked against this class by a test, so a new field must be documented there.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spotlight.server.keys import Keys
from spotlight.server.settings_errors import load_settings


class Settings(BaseSettings):
    """Operator configuration. Defaults suit one laptop; production overrides them by env."""

    model_config = SettingsConfigDict(env_prefix="SPOTLIGHT_", extra="ignore")

    # --- where things live ---
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SPOTLIGHT_REDIS_URL", "REDIS_URL"),
        description="Redis URL. Unset: `spotlight up` starts an embedded Redis under data_dir.",
    )
    data_dir: Path = Field(
        Path(".spotlight"),
        description="Local folder for the default store and the embedded Redis's files.",
    )
    store_url: str | None = Field(
        None,
        description="fsspec URL of the artifact store (e.g. s3://bucket/prefix). Unset: data_dir/store.",
    )
    queue_name: str = Field("spotlight", description="RQ queue the API enqueues on and workers listen to.")
    namespace: str = Field(
        "",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_-]{0,62})?$",
        description="Prefix `<namespace>:` on every Redis key of ours and on the queue names, so several "
        "deployments can share one Redis. Empty: no prefix.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder where dataset arrays read from a remote store are cached for memory-mapping. "
        "Unset: data_dir/cache.",
    )
    cache_max_bytes: int = Field(
        20 * 1024**3,
        ge=0,
        description="Size bound of that cache; least recently used files go first. 0: no cache (arrays "
        "are streamed into memory).",
    )

    # --- jobs ---
    job_timeout_s: int = Field(6 * 3600, description="Wall-clock limit of one job in the worker (RQ job timeout).")
    result_ttl_s: int = Field(7 * 24 * 3600, description="How long finished or failed jobs and their results are kept.")
    job_retries: int = Field(1, description="How often a job whose worker died is retried on another worker.")
    max_active_jobs_per_tenant: int = Field(20, description="Queued + running jobs one tenant may have (429 past it).")
    max_job_cost: float = Field(
        1e14,
        gt=0,
        description="Largest estimated cost of one job, in element-steps: n·(d + e) × restarts × steps × "
        "(regions + permutations), e the label evidence columns (up to 128 when the dataset has labels).",
    )
    worker_memory_bytes: int = Field(
        8 * 2**30,
        gt=0,
        description="Memory one search may use in a worker's work-horse, in bytes: a job whose estimate "
        "(spotlight/server/cost.py, job_memory_bytes) is above it is refused at submission (400 job_too_costly). "
        "Set it to the worker machine's memory divided by its workers, less a margin.",
    )
    max_active_cost_per_tenant: float = Field(
        2e14, gt=0, description="Largest summed estimated cost of one tenant's queued + running jobs (429 past it)."
    )
    large_job_cost: float = Field(
        1e11,
        gt=0,
        description="Jobs estimated above this go to the large lane, served in turn with the others (round robin).",
    )
    yield_to_other_tenants: bool = Field(
        True,
        description="A running search gives its worker up between regions, and between shuffles of its permutation "
        "test, while another tenant's job waits (it goes on later from a checkpoint in the store).",
    )
    yield_slice_s: float = Field(
        60.0,
        ge=0,
        description="A search yields at once to another tenant's job that has not started yet; to one that "
        "already had a turn only after running this long (round robin in slices of at least one region).",
    )
    progress_interval_s: float = Field(0.3, description="How often a worker publishes a job's progress.")

    # --- input limits ---
    max_upload_bytes: int = Field(
        4 * 1024**3, description="Largest accepted upload or reference, in bytes (413 past it)."
    )
    max_elements: int = Field(2 * 1024**3, description="Largest accepted n·d of an embedding matrix.")
    max_inline_bytes: int = Field(64 * 1024**2, description="Largest JSON body with inline arrays.")
    max_job_body_bytes: int = Field(
        4 * 1024**2,
        description="Largest job submission body (its inline dataset is parsed whole; larger data: upload it first).",
    )
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="Without API keys, dotted Host names the API answers besides localhost and IP addresses "
        '(JSON list, e.g. ["spotlight.lan"]); others get 421, a guard against DNS rebinding.',
    )
    max_stored_bytes_per_tenant: int = Field(
        50 * 1024**3,
        ge=0,
        description="Most bytes of datasets one tenant may have stored (413 storage_quota_exceeded past it; 0: no limit).",
    )
    min_free_store_bytes: int = Field(
        1024**3,
        ge=0,
        description="Uploads are refused (503 store_error) while a local store's disk has less free space than "
        "this, so tenants' data cannot fill the disk Redis's AOF and results are written to.",
    )
    max_score_body_bytes: int = Field(
        8 * 1024**2,
        description="Largest POST /v1/jobs/{id}/score body (bare embeddings are parsed whole; more rows: upload "
        "them and score the dataset id).",
    )

    # --- references ---
    allowed_roots: list[str] = Field(
        default_factory=list, description="Local folders `file://` references may read from (JSON list)."
    )
    allowed_schemes: list[str] = Field(
        default_factory=lambda: ["file"], description='URI schemes references may use (e.g. ["file","s3"]).'
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts http(s) references and callback URLs may reach."
    )
    allow_private_addresses: bool = Field(
        False, description="Let references and callbacks reach loopback, link-local and private addresses."
    )
    reference_timeout_s: float = Field(
        120.0, gt=0, description="Total time one http(s) reference may take to download, however slowly it trickles."
    )
    max_reference_fetches: int = Field(
        8, ge=1, description="References one API process reads at once, all tenants together (503 past it)."
    )
    max_reference_fetches_per_tenant: int = Field(
        2, ge=1, description="References one tenant may have read at once (429 past it)."
    )

    # --- access ---
    api_keys: str | None = Field(
        None, description="Comma-separated `tenant:key` pairs. Unset (and no keys file): the server runs open."
    )
    api_keys_file: Path | None = Field(None, description="File of `tenant:key` lines (or `tenant:sha256:<hex>`).")

    # --- webhooks ---
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 secret that signs callback bodies.")
    webhook_retries: int = Field(5, description="Delivery attempts of one callback before giving up.")
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time limit of one delivery attempt; another tenant's callback waits at most this long "
        "per attempt ahead of it on a callbacks worker (later attempts are scheduled, not slept through).",
    )

    # --- logging ---
    log_level: str = Field("INFO", description="Log level of every process.")
    log_json: bool = Field(True, description="Emit one JSON object per log line.")

    # --- worker liveness (RQ's abandoned-job handling, configured) ---
    worker_heartbeat_s: int = Field(
        10, ge=1, description="How often a busy worker proves it is alive (RQ's job monitoring interval)."
    )
    worker_lost_after_s: int = Field(
        60,
        ge=1,
        description="Silence past one heartbeat after which a running job counts as abandoned: retried, or failed `worker_lost`.",
    )
    maintenance_interval_s: int = Field(
        30, ge=1, description="How often an idle worker looks for abandoned jobs (RQ's maintenance interval)."
    )

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to a folder under data_dir."""
        if self.store_url:
            return self.store_url
        return str((self.data_dir / "store").resolve())

    def resolved_cache_dir(self) -> Path:
        """The local cache folder, defaulting to a folder under data_dir."""
        return (self.cache_dir or self.data_dir / "cache").resolve()

    def rq_queue_name(self) -> str:
        """The RQ queue's name: ``queue_name``, behind ``<namespace>:`` when a namespace is set."""
        return Keys.of(self).rq_queue


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process; tests clear the cache after changing the environment.

    A bad variable ends the process with one line naming it and the form it needs, and unknown
    SPOTLIGHT_* variables are warned about (spotlight/server/settings_errors.py).
    """
    return load_settings(Settings)
