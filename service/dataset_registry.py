"""Dataset records in Redis and their content in the store, kept consistent.

A record (`DatasetRecord`, JSON at `Keys.dataset(id)`) is a tenant's name for stored content;
the content lives once under `datasets/<sha256>/`, however many records point at it. The set
`Keys.blob_refs(sha256)` holds those records' ids; deleting the last one deletes the content.
Commit and delete of one sha256 run under a short Redis lock, so an upload that lands while the
last reference is being deleted can never end up pointing at removed files.
"""

from __future__ import annotations

import os
import secrets
import shutil

import redis

from spotlight.contract.errors import InvalidInput, NotFound, TooLarge, Unavailable
from spotlight.contract.protocol import (
    TAG_MAX,
    DatasetRecord,
    ErrorCode,
    dataset_prefix,
    plain_text,
    redis_text,
    utcnow,
)
from spotlight.server.dataset_files import DatasetBuilder
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

LOCK_TIMEOUT_S = 120


def new_dataset_id() -> str:
    return "ds_" + secrets.token_hex(12)


def _quota_exceeded(used: int, adding: int, quota: int) -> TooLarge:
    return TooLarge(
        ErrorCode.QUOTA_EXCEEDED,
        f"Your datasets hold {used} bytes; this one ({adding} bytes) would pass your storage quota of {quota} "
        "bytes (SPOTLIGHT_MAX_STORED_BYTES_PER_TENANT). Delete datasets you no longer need.",
        {"stored_bytes": used, "adding": adding, "limit": quota},
    )


def _dir_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def checked_tags(tags: list[str] | None) -> list[str]:
    """A dataset's tags as given (the query's form of protocol.TagText, with its own message), each
    refused when empty, too long, holding a space or comma, or control or bidi-override characters."""
    for tag in tags or []:
        if not tag or len(tag) > TAG_MAX or any(c.isspace() or c == "," for c in tag):
            raise InvalidInput(
                ErrorCode.VALIDATION,
                f"tags must be 1-{TAG_MAX} characters without spaces or commas; got {tag[:80]!r}",
                {"field": "tags"},
            )
        _plain(tag, "tags")
    return list(tags or [])


def checked_name(name: str | None) -> str | None:
    """A dataset's name as given, refused when it holds control or bidi-override characters."""
    return _plain(name, "name")


def _plain(text: str | None, field: str) -> str | None:
    """Refused when a name or tag holds control or bidi-override characters (spotlight/contract/protocol.py::plain_text)."""
    try:
        return None if text is None else plain_text(text)
    except ValueError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, f"{field} {exc}", {"field": field}) from None


class DatasetRegistry:
    def __init__(self, r: redis.Redis, store: ArtifactStore, keys: Keys, settings: Settings | None = None) -> None:
        self.r = r
        self.store = store
        self.keys = keys
        self.quota = settings.max_stored_bytes_per_tenant if settings else 0
        self.min_free = settings.min_free_store_bytes if settings else 0

    def blob_lock(self, sha256: str) -> redis.lock.Lock:
        return self.r.lock(self.keys.blob_lock(sha256), timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_TIMEOUT_S)

    # ----- room: the tenant's quota and the disk's free space -----
    def check_room(self, tenant: str, adding: int = 0) -> None:
        """Before an upload is read (adding=0) and again once its size is known: 413 past the
        tenant's quota, 503 store_error when a local store's disk is nearly full (what is left
        there is kept for Redis's AOF and the workers' results)."""
        if self.quota:
            used = int(self.r.get(self.keys.tenant_bytes(tenant)) or 0)
            if used + adding > self.quota or (not adding and used >= self.quota):
                raise _quota_exceeded(used, adding, self.quota)
        if self.min_free and self.store.is_local:
            try:
                free = shutil.disk_usage(self.store.root).free
            except OSError:
                return
            if free < self.min_free:  # an upload being registered is on that disk already
                raise Unavailable(
                    ErrorCode.STORE_ERROR,
                    "The server's storage is nearly full; uploads are refused until an operator frees space.",
                    {"reason": "disk_full", "setting": "SPOTLIGHT_MIN_FREE_STORE_BYTES"},
                    retry_after_s=60,
                )

    def _reserve(self, tenant: str, size: int) -> None:
        """Count `size` against the tenant's quota in one atomic step (two uploads cannot both pass)."""
        used = int(self.r.incrby(self.keys.tenant_bytes(tenant), size))
        if self.quota and used > self.quota:
            self.r.decrby(self.keys.tenant_bytes(tenant), size)
            raise _quota_exceeded(used - size, size, self.quota)

    def register(
        self,
        tenant: str,
        builder: DatasetBuilder,
        n: int,
        dim: int,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> tuple[DatasetRecord, bool]:
        """Move the built files in (unless the content is already stored) and create the record.

        Returns the record and whether this tenant already had this content (deduplicated). Other
        tenants' copies are shared on disk but never disclosed: telling a caller that someone else
        holds the bytes it just sent would let it test guesses about other tenants' data.
        """
        sha = builder.content_sha256()
        size = _dir_bytes(builder.work_dir)
        self.check_room(tenant, size)
        record = DatasetRecord(
            id=new_dataset_id(),
            tenant=tenant,
            sha256=sha,
            n=n,
            dim=dim,
            fields=builder.manifest(n, dim)["fields"],
            created_at=utcnow(),
            name=name,
            tags=list(tags or []),
            stored_bytes=size,
        )
        self._reserve(tenant, size)
        try:
            with self.blob_lock(sha):
                existed = self._tenant_holds(tenant, sha)
                builder.commit(self.store, n, dim)
                pipe = self.r.pipeline()
                pipe.set(self.keys.dataset(record.id), record.model_dump_json())
                pipe.zadd(self.keys.tenant_datasets(tenant), {record.id: record.created_at.timestamp()})
                pipe.sadd(self.keys.blob_refs(sha), record.id)
                pipe.execute()
        except BaseException:
            self.r.decrby(self.keys.tenant_bytes(tenant), size)  # nothing stored for it
            raise
        return record, existed

    def _tenant_holds(self, tenant: str, sha256: str) -> bool:
        """Whether one of `tenant`'s own datasets already points at this content."""
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.r.smembers(self.keys.blob_refs(sha256))]
        if not ids:
            return False
        for raw in self.r.mget([self.keys.dataset(i) for i in ids]):
            if raw and DatasetRecord.model_validate_json(raw).tenant == tenant:
                return True
        return False

    def get(self, tenant: str, dataset_id: str) -> DatasetRecord:
        raw = self.r.get(self.keys.dataset(dataset_id)) if dataset_id.startswith("ds_") else None
        record = DatasetRecord.model_validate_json(raw) if raw else None
        if record is None or record.tenant != tenant:
            raise NotFound(
                ErrorCode.DATASET_NOT_FOUND, f"No dataset {dataset_id!r} for this caller.", {"dataset": dataset_id}
            )
        return record

    def list(self, tenant: str, limit: int, offset: int) -> tuple[list[DatasetRecord], int]:
        key = self.keys.tenant_datasets(tenant)
        total = int(self.r.zcard(key))
        # Past the end: an empty page (Redis refuses offsets beyond 64 bits with an error).
        ids = [redis_text(i) for i in self.r.zrevrange(key, offset, offset + limit - 1)] if offset < total else []
        raws = self.r.mget([self.keys.dataset(i) for i in ids]) if ids else []
        records = [DatasetRecord.model_validate_json(raw) for raw in raws if raw]
        return records, total

    def delete(self, tenant: str, dataset_id: str) -> DatasetRecord:
        record = self.get(tenant, dataset_id)
        with self.blob_lock(record.sha256):
            pipe = self.r.pipeline()
            pipe.delete(self.keys.dataset(record.id))
            pipe.zrem(self.keys.tenant_datasets(tenant), record.id)
            pipe.srem(self.keys.blob_refs(record.sha256), record.id)
            pipe.decrby(self.keys.tenant_bytes(tenant), record.stored_bytes)
            pipe.scard(self.keys.blob_refs(record.sha256))
            remaining = pipe.execute()[-1]
            if int(remaining) == 0:
                self.store.delete_prefix(dataset_prefix(record.sha256))
        return record
