"""The artifact store: big arrays and results live here, never in Redis.

A thin layer over fsspec so the same code serves a local folder (the default) and any fsspec URL
(`s3://bucket/prefix` with s3fs installed).

Whole or nothing, on both kinds of store:

- Local folder: a write goes to a temporary name in the same folder and is renamed into place
  (one atomic rename), so a reader sees a whole file or none.
- Object store: a rename is a copy there, and a half-finished copy is visible under the final
  name. So each object is first written to a local temporary file and then put *whole* under its
  final key with one upload (S3 makes an object visible only when its PUT or multipart upload
  completes). Nothing is ever renamed on an object store. The results-last rule
  (``regions.json`` written after every other result file) therefore holds there too.

Reading from an object store, no file can be memory-mapped. Immutable files (a dataset's arrays:
they are content-addressed) are copied into a bounded local cache (:class:`LocalCache`) and mapped
from there; past the cache's size, or with the cache off, an array is streamed into memory.
Listings are never cached (``use_listings_cache=False``): another process (an API on another node)
may have just written the object this one asks about.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import numpy as np

log = logging.getLogger("spotlight.server.store")


class StoreError(RuntimeError):
    """The store could not be read or written (full, unwritable, unreachable)."""


class LocalCache:
    """A bounded folder of copies of immutable store objects, least recently used evicted first.

    Why: on an object store the worker cannot memory-map a dataset, and downloading it for every
    job of the same dataset would cost one full transfer per job. Copies are keyed by store path,
    which is safe only for content-addressed files (``datasets/<sha256>/...`` never change once
    written); callers pass ``immutable=True`` for those alone.

    Several work-horses (processes) may share one folder: a copy is downloaded to a private
    temporary name and renamed into place, and eviction deletes files that another process may
    still have mapped (Linux keeps a mapped file's pages until the mapping goes). Use refreshes a
    file's mtime, which is what "least recently used" is measured by.
    """

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _local(self, key: str) -> Path:
        return self.root / key.lstrip("/")

    def fetch(self, fs: Any, remote: str, key: str) -> str | None:
        """The local path of a copy of `remote`, downloading it unless a copy is there already;
        None when it cannot fit in the cache (the caller streams it instead). A copy only ever
        appears whole (renamed in after its size was checked), so its presence is enough."""
        if not self.enabled:
            return None
        local = self._local(key)
        with contextlib.suppress(OSError):
            os.utime(local)  # a hit: now the most recently used
            return str(local)
        size = int(fs.size(remote))
        if size > self.max_bytes:
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        self.evict(self.max_bytes - size)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
        os.close(fd)
        try:
            fs.get_file(remote, tmp)
            got = os.path.getsize(tmp)
            if got != size:
                raise StoreError(f"downloaded {got} of {size} bytes of {key}")
            os.replace(tmp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return str(local)

    def files(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached copy (temporary parts excluded)."""
        out = []
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.startswith(".part-"):
                    continue
                path = Path(folder) / name
                with contextlib.suppress(OSError):
                    st = path.stat()
                    out.append((st.st_mtime, st.st_size, path))
        return out

    def size(self) -> int:
        return sum(size for _, size, _ in self.files())

    def evict(self, keep_bytes: int) -> list[Path]:
        """Delete least recently used copies until at most `keep_bytes` remain; returns what went."""
        entries = sorted(self.files())
        total = sum(size for _, size, _ in entries)
        removed: list[Path] = []
        for _mtime, size, path in entries:
            if total <= max(keep_bytes, 0):
                break
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
                total -= size
        if removed:
            log.info("cache: evicted %d file(s) from %s", len(removed), self.root)
        return removed


class ArtifactStore:
    """Paths are relative to the store root and use '/' separators."""

    def __init__(self, url: str, cache: LocalCache | None = None) -> None:
        self.url = url
        protocol, _ = fsspec.core.split_protocol(url)
        # A listing cached in this process would hide what another process wrote since.
        options: dict[str, Any] = {} if protocol in (None, "file", "local") else {"use_listings_cache": False}
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.root = root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.cache = None if self.is_local else cache
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    # ----- paths -----
    def full(self, path: str) -> str:
        return f"{self.root}/{path.lstrip('/')}"

    def local_path(self, path: str) -> str | None:
        """The file's path on this machine (for np.load(mmap_mode='r')), or None on remote stores."""
        return self.full(path) if self.is_local else None

    # ----- reads -----
    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self.full(path)))

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(self.full(path), "rb")

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def load_npy(self, path: str, mmap: bool = True, *, immutable: bool = False) -> np.ndarray:
        """Load an array without pickle.

        Local store: memory-mapped in place (with `mmap`). Object store: an `immutable` file that
        fits the local cache is copied there once and memory-mapped; anything else is streamed
        into memory in chunks (numpy reads a file object piecewise into the array, so the peak is
        the array itself, not the array plus a copy of the file's bytes).
        """
        local = self.local_path(path)
        if local is None and immutable and self.cache is not None and mmap:
            full = self.full(path)
            key = f"{hashlib.sha256(self.url.encode()).hexdigest()[:16]}/{path}"  # one store's copies per folder
            try:
                local = self.cache.fetch(self.fs, full, key)
            except FileNotFoundError:
                raise  # missing: the caller tells "dataset gone" from a store fault
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
        if local is not None:
            return np.load(local, mmap_mode="r" if mmap else None, allow_pickle=False)
        with self.open_read(path) as f:
            return np.load(f, allow_pickle=False)

    def size(self, path: str) -> int:
        return int(self.fs.size(self.full(path)))

    def list(self, prefix: str) -> list[str]:
        full = self.full(prefix)
        if not self.fs.exists(full):
            return []
        return [p[len(self.root) + 1 :] for p in self.fs.ls(full, detail=False)]

    # ----- writes -----
    @contextlib.contextmanager
    def open_write_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """Write a file whole or not at all (see the module doc for how, per kind of store)."""
        if not self.is_local:
            with self._open_write_object(path) as f:
                yield f
            return
        final = self.full(path)
        parent = final.rsplit("/", 1)[0]
        tmp = f"{parent}/.tmp-{secrets.token_hex(8)}-{final.rsplit('/', 1)[1]}"
        try:
            self.fs.makedirs(parent, exist_ok=True)
            f = self.fs.open(tmp, "wb")
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        try:
            with f:
                yield f
            self.fs.mv(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write {path}: {exc}") from exc
            raise

    @contextlib.contextmanager
    def _open_write_object(self, path: str) -> Iterator[IO[bytes]]:
        """Object store: write a local temporary file, then upload it whole under its final key."""
        final = self.full(path)
        with tempfile.NamedTemporaryFile(prefix="spotlight-put-") as tmp:
            yield tmp
            tmp.flush()
            try:
                self.fs.put_file(tmp.name, final)
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {exc}") from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_write_atomic(path) as f:
            f.write(data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, allow_nan=False).encode())

    def save_npy(self, path: str, array: np.ndarray) -> None:
        with self.open_write_atomic(path) as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    def move_in(self, local_file: str, path: str) -> None:
        """Move a finished local temporary file into the store (a rename when the store is local)."""
        final = self.full(path)
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            if self.is_local:
                os.replace(local_file, final)
            else:
                self.fs.put_file(local_file, final)
                os.unlink(local_file)
        except OSError as exc:
            raise StoreError(f"cannot store {path}: {exc}") from exc

    def delete_prefix(self, prefix: str) -> None:
        full = self.full(prefix)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def check_writable(self) -> None:
        """Raise StoreError unless a small file can be written and removed (for /readyz)."""
        probe = f".probe/{secrets.token_hex(6)}"
        self.write_bytes(probe, b"ok")
        with contextlib.suppress(Exception):
            self.fs.rm(self.full(probe))


def store_from_settings(settings: Any) -> ArtifactStore:
    """The store of these settings, with the local cache its remote reads use."""
    cache = LocalCache(settings.resolved_cache_dir(), settings.cache_max_bytes)
    return ArtifactStore(settings.resolved_store_url(), cache=cache)
