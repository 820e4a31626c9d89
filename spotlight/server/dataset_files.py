"""Read a stored dataset: the one reader the API (members pages) and the worker (search inputs) share.

A dataset is content-addressed under ``datasets/<sha256>/`` in the layout spotlight/contract/protocol.py
documents. Arrays come back memory-mapped when the store is local (on an object store: mapped from
a bounded local cache, or streamed when they do not fit; spotlight/server/store.py), so the worker can hand an
n x d matrix to the engine without a copy and the API can read fifty rows of a members page
without loading the rest. Metadata rows are read by offset (``metadata.offsets.npy``), so a page
of members costs a few seeks whatever n is.

This module needs numpy and the store only: no FastAPI, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from spotlight.contract.protocol import dataset_file
from spotlight.server.store import ArtifactStore

MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "embeddings.npy"
LOSSES_FILE = "losses.npy"
LABELS_FILE = "labels.npy"
PREDICTIONS_FILE = "predictions.npy"
SAMPLE_WEIGHTS_FILE = "sample_weights.npy"
IDS_FILE = "ids.json"
METADATA_FILE = "metadata.jsonl"
METADATA_OFFSETS_FILE = "metadata.offsets.npy"
TEXTS_FILE = "texts.jsonl"
TEXTS_OFFSETS_FILE = "texts.offsets.npy"

# The stored field -> file it lives in (metadata and texts also have their offsets files).
FIELD_FILES: dict[str, str] = {
    "embeddings": EMBEDDINGS_FILE,
    "losses": LOSSES_FILE,
    "labels": LABELS_FILE,
    "predictions": PREDICTIONS_FILE,
    "sample_weights": SAMPLE_WEIGHTS_FILE,
    "ids": IDS_FILE,
    "metadata": METADATA_FILE,
    "texts": TEXTS_FILE,
}
# Line files read by byte offset: field -> (lines, offsets).
_LINE_FILES: dict[str, tuple[str, str]] = {
    "metadata": (METADATA_FILE, METADATA_OFFSETS_FILE),
    "texts": (TEXTS_FILE, TEXTS_OFFSETS_FILE),
}


class DatasetMissing(FileNotFoundError):
    """The dataset's files are not in the store (deleted, expired, or never stored)."""


class DatasetFiles:
    """Random access to one stored dataset.

    Parameters
    ----------
    store : ArtifactStore
        The artifact store the dataset lives in.
    sha256 : str
        The content hash naming the dataset's folder (``DatasetRecord.sha256``).

    Examples
    --------
    >>> files = DatasetFiles(store, record.sha256)          # doctest: +SKIP
    >>> x = files.embeddings()                               # n x d float32, memory-mapped
    >>> files.metadata([3, 17])                              # two rows, read by offset
    """

    def __init__(self, store: ArtifactStore, sha256: str) -> None:
        self.store = store
        self.sha256 = sha256

    def path(self, name: str) -> str:
        return dataset_file(self.sha256, name)

    def manifest(self) -> dict[str, Any]:
        """The manifest: ``n``, ``dim``, ``fields``, ``sha256``, per-file hashes and sizes."""
        return self._manifest

    @cached_property
    def _manifest(self) -> dict[str, Any]:
        try:
            return dict(self.store.read_json(self.path(MANIFEST_FILE)))
        except FileNotFoundError as exc:
            raise DatasetMissing(f"dataset {self.sha256} is not in the store") from exc

    @property
    def n(self) -> int:
        return int(self._manifest["n"])

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def fields(self) -> list[str]:
        return list(self._manifest["fields"])

    def has(self, field: str) -> bool:
        return field in self._manifest["fields"]

    # ----- arrays -----
    def embeddings(self, mmap: bool = True) -> np.ndarray:
        """float32, n x d."""
        return self._array(EMBEDDINGS_FILE, mmap)

    def losses(self, mmap: bool = True) -> np.ndarray:
        """float32, n (computed from logits + labels at ingestion when those were given)."""
        return self._array(LOSSES_FILE, mmap)

    def labels(self, mmap: bool = True) -> np.ndarray | None:
        """int64, n, or None when the dataset has no labels."""
        return self._array(LABELS_FILE, mmap) if self.has("labels") else None

    def predictions(self, mmap: bool = True) -> np.ndarray | None:
        """int64, n, or None."""
        return self._array(PREDICTIONS_FILE, mmap) if self.has("predictions") else None

    def sample_weights(self, mmap: bool = True) -> np.ndarray | None:
        """float32, n, non-negative, or None."""
        return self._array(SAMPLE_WEIGHTS_FILE, mmap) if self.has("sample_weights") else None

    def _array(self, name: str, mmap: bool) -> np.ndarray:
        try:
            # Content-addressed, so never rewritten: a remote store may serve it from the local cache.
            return self.store.load_npy(self.path(name), mmap=mmap, immutable=True)
        except FileNotFoundError as exc:
            raise DatasetMissing(f"dataset {self.sha256} has no {name}") from exc

    # ----- rows -----
    def ids(self, indices: Sequence[int] | np.ndarray | None = None) -> list[str | int] | None:
        """The caller's ids of the given rows (all rows when indices is None), or None without ids."""
        if not self.has("ids"):
            return None
        all_ids = self._all_ids
        if indices is None:
            return list(all_ids)
        return [all_ids[int(i)] for i in indices]

    @cached_property
    def _all_ids(self) -> list[str | int]:
        return list(self.store.read_json(self.path(IDS_FILE)))

    def metadata(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]] | None:
        """The metadata objects of the given rows, read by byte offset, or None without metadata."""
        return self._lines("metadata", indices)

    def texts(self, indices: Sequence[int] | np.ndarray) -> list[str] | None:
        """The rows' texts (the ``texts`` field: a sentence, a caption), read by byte offset, or None
        without texts. Read for a region's members and a sample only, never all n at once."""
        return self._lines("texts", indices)

    def _lines(self, field: str, indices: Sequence[int] | np.ndarray) -> list[Any] | None:
        if not self.has(field):
            return None
        lines_file, offsets_file = _LINE_FILES[field]
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return []
        if idx.min() < 0 or idx.max() >= self.n:
            raise IndexError(f"row index out of range for n={self.n}")
        offsets = self._array(offsets_file, mmap=True)
        out: list[Any] = []
        with self.store.open_read(self.path(lines_file)) as f:
            for i in idx:
                start, end = int(offsets[i]), int(offsets[i + 1])
                f.seek(start)
                out.append(json.loads(f.read(end - start)))
        return out


# ----- writing (ingestion, and tests that need a stored dataset without the API) -----
class _HashingWriter:
    """A binary file that hashes what goes through it, so the content hash costs no second read."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._h = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self._f.write(data)
        self._h.update(data)
        self.bytes += len(data)
        return len(data)

    def close(self) -> str:
        self._f.close()
        return self._h.hexdigest()


class DatasetBuilder:
    """Writes a dataset's canonical files into a private folder, then moves them into the store.

    Canonical means: float32 little-endian embeddings/losses/sample_weights, int64 labels and
    predictions, compact JSON for ids, one sorted-key JSON object per metadata line. The same
    content therefore gives the same bytes, the same per-file hashes and the same dataset sha256,
    which is what lets two uploads of one dataset share one copy.

    Arrays may arrive in row chunks (``add_array(..., chunks)``) so a 1 GB matrix never needs to
    sit in memory. Nothing is visible in the store until ``commit``, which writes the manifest last.
    """

    DTYPES: dict[str, np.dtype[Any]] = {
        "embeddings": np.dtype("<f4"),
        "losses": np.dtype("<f4"),
        "sample_weights": np.dtype("<f4"),
        "labels": np.dtype("<i8"),
        "predictions": np.dtype("<i8"),
    }

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        os.makedirs(work_dir, exist_ok=True)
        self.files: dict[str, dict[str, Any]] = {}
        self.fields: list[str] = []
        self.extra: dict[str, Any] = {}

    def _local(self, name: str) -> str:
        return f"{self.work_dir}/{name}"

    def add_array(self, field: str, shape: tuple[int, ...], chunks: Any) -> None:
        """Write ``field`` of the given shape from an iterable of row chunks (cast to the canonical dtype)."""
        dtype = self.DTYPES[field]
        name = FIELD_FILES[field]
        w = _HashingWriter(self._local(name))
        try:
            np.lib.format.write_array_header_1_0(
                w, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
            )
            rows = 0
            for chunk in chunks:
                c = np.ascontiguousarray(chunk, dtype=dtype)
                rows += c.shape[0] if c.ndim else 1
                w.write(c.data.cast("B"))
            if rows != (shape[0] if shape else 1):
                raise ValueError(f"{field}: wrote {rows} rows, expected {shape[0]}")
        finally:
            digest = w.close()
        self.files[name] = {"sha256": digest, "bytes": w.bytes}
        self.fields.append(field)

    def add_ids(self, ids: Sequence[str | int]) -> None:
        w = _HashingWriter(self._local(IDS_FILE))
        try:
            w.write(json.dumps(list(ids), separators=(",", ":"), ensure_ascii=False).encode())
        finally:
            digest = w.close()
        self.files[IDS_FILE] = {"sha256": digest, "bytes": w.bytes}
        self.fields.append("ids")

    def add_metadata(self, rows: Any, n: int) -> None:
        """Write n JSON objects, one per line, and their byte offsets (n + 1 int64) for random access."""
        self._add_lines("metadata", rows, n, sort_keys=True)

    def add_texts(self, texts: Any, n: int) -> None:
        """Write n strings, one JSON string per line, and their byte offsets (as metadata)."""
        self._add_lines("texts", texts, n, sort_keys=False)

    def _add_lines(self, field: str, rows: Any, n: int, sort_keys: bool) -> None:
        lines_file, offsets_file = _LINE_FILES[field]
        offsets = np.zeros(n + 1, dtype=np.int64)
        w = _HashingWriter(self._local(lines_file))
        count = 0
        try:
            for row in rows:
                if count >= n:
                    raise ValueError(f"{field}: more than {n} rows")
                line = json.dumps(row, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
                w.write(line.encode() + b"\n")
                count += 1
                offsets[count] = w.bytes
        finally:
            digest = w.close()
        if count != n:
            raise ValueError(f"{field}: {count} rows, expected {n}")
        self.files[lines_file] = {"sha256": digest, "bytes": w.bytes}
        # The offsets derive from the lines file, so they are not part of the content hash.
        np.save(self._local(offsets_file), offsets, allow_pickle=False)
        self.fields.append(field)

    def content_sha256(self) -> str:
        """sha256 over the canonical files' names and hashes (order-free: sorted by name)."""
        h = hashlib.sha256(b"spotlight-dataset-v1\n")
        for name in sorted(self.files):
            h.update(f"{name}\0{self.files[name]['sha256']}\n".encode())
        return h.hexdigest()

    def manifest(self, n: int, dim: int) -> dict[str, Any]:
        order = [f for f in FIELD_FILES if f in self.fields]
        return {
            "format": "spotlight-dataset-v1",
            "sha256": self.content_sha256(),
            "n": int(n),
            "dim": int(dim),
            "fields": order,
            "files": {k: self.files[k] for k in sorted(self.files)},
            **self.extra,
        }

    def commit(self, store: ArtifactStore, n: int, dim: int) -> dict[str, Any]:
        """Move the files into ``datasets/<sha256>/`` (manifest last). Already stored: keep the old copy."""
        manifest = self.manifest(n, dim)
        sha = manifest["sha256"]
        if not store.exists(dataset_file(sha, MANIFEST_FILE)):
            names = list(self.files)
            names += [offsets for field, (_, offsets) in _LINE_FILES.items() if field in self.fields]
            for name in names:
                store.move_in(self._local(name), dataset_file(sha, name))
            store.write_json(dataset_file(sha, MANIFEST_FILE), manifest)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return manifest

    def discard(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def write_dataset(
    store: ArtifactStore,
    work_dir: str,
    embeddings: np.ndarray,
    losses: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    ids: Sequence[str | int] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Store in-memory arrays as a dataset and return its manifest (for tests and tools).

    It checks shapes only; the API's ingestion is what validates untrusted input.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError("embeddings must be n x d")
    n, d = x.shape
    b = DatasetBuilder(work_dir)
    try:
        b.add_array("embeddings", (n, d), [x])
        b.add_array("losses", (n,), [np.asarray(losses).reshape(n)])
        for field, arr in (("labels", labels), ("predictions", predictions), ("sample_weights", sample_weights)):
            if arr is not None:
                b.add_array(field, (n,), [np.asarray(arr).reshape(n)])
        if ids is not None:
            if len(ids) != n:
                raise ValueError("ids must have n entries")
            b.add_ids(ids)
        if metadata is not None:
            b.add_metadata(metadata, n)
        if texts is not None:
            b.add_texts(texts, n)
        return b.commit(store, n, d)
    except BaseException:
        b.discard()
        raise
