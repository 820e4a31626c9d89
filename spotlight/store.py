"""The artifact store: big arrays and results live here, never in Redis.

A thin layer over fsspec so the same code serves a local folder (the default) and any fsspec URL
(`s3://bucket/prefix` with s3fs installed). Writes go to a temporary name and are renamed into
place, so a reader sees a whole file or none. On object stores, where a PUT is already atomic,
the temporary write is the object itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import numpy as np


class StoreError(RuntimeError):
    """The store could not be read or written (full, unwritable, unreachable)."""


class ArtifactStore:
    """Paths are relative to the store root and use '/' separators."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
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

    def load_npy(self, path: str, mmap: bool = True) -> np.ndarray:
        """Load an array without pickle; memory-mapped when the store is local."""
        local = self.local_path(path)
        if local is not None:
            return np.load(local, mmap_mode="r" if mmap else None, allow_pickle=False)
        with self.open_read(path) as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)

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
        """Write to a temporary name, rename into place on success, remove it on failure."""
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
    return ArtifactStore(settings.resolved_store_url())
