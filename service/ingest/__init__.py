"""Ingestion: any accepted input -> validated canonical files in a private work folder.

    upload (multipart / JSON / URI) -> Sources (.npy files on disk, ids, metadata)
                                    -> build() validates and writes canonical files
                                    -> DatasetRegistry moves them into the store, manifest last

The work folder sits inside the store root when the store is local (so moving in is a rename)
and is removed whatever happens, so an upload that fails leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from starlette.requests import Request

from service.ingest.build import build
from service.ingest.multipart import Part, receive_multipart
from service.ingest.npy import NPY_MAGIC, inspect_npy, iter_rows, load_small, save_npy
from service.ingest.npz import extract_npz
from service.ingest.parquet import parquet_to_sources
from service.ingest.reference import fetch_reference
from service.ingest.sources import JsonlRows, Sources, loads
from service.schemas import DatasetReference, InlineDataset
from spotlight.contract import columns as colmap
from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import DATASET_ARRAYS, DATASET_FIELDS, ErrorCode
from spotlight.server.dataset_files import DatasetBuilder
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
METADATA_CHUNK_BYTES = 4 * 1024 * 1024
PARQUET_MAGIC = b"PAR1"


# Upload work folders live here inside a local store; service/expiry.py sweeps those a killed process left.
WORK_DIR = ".ingest"


@contextlib.contextmanager
def workspace(store: ArtifactStore) -> Iterator[str]:
    """A private folder for one upload, on the store's filesystem when the store is local."""
    if store.is_local:
        path = os.path.join(store.root, WORK_DIR, secrets.token_hex(8))
        os.makedirs(path)
    else:
        path = tempfile.mkdtemp(prefix="spotlight-ingest-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(NPY_MAGIC):
        return "npy"
    return "unknown"


def sources_from_container(
    path: str, work_dir: str, settings: Settings, what: str, columns: dict[str, str] | None = None
) -> Sources:
    """A whole dataset in one file: .npz or .parquet (recognised by content, not by name).

    `columns` maps fields to the file's own column (or key) names where aliases do not find them
    (spotlight/contract/columns.py).
    """
    kind = _sniff(path)
    if kind == "npz":
        return _sources_from_npz(extract_npz(path, work_dir, settings.max_upload_bytes, columns), work_dir, settings)
    if kind == "parquet":
        return parquet_to_sources(path, work_dir, settings, columns)
    if kind == "npy":
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"{what} is a single .npy; send an .npz (or .parquet), or separate .npy fields named after the keys",
        )
    raise InvalidInput(ErrorCode.BAD_FILE, f"{what} is neither an .npz nor a .parquet file", {"format": "unknown"})


def _sources_from_npz(members: dict[str, str], work_dir: str, settings: Settings) -> Sources:
    src = Sources(origin="npz")
    for key, path in members.items():
        if key == "ids":
            src.ids = path
        elif key == "texts":
            src.texts = path
        elif key != "metadata":
            src.arrays[key] = path
    if "metadata" in members:
        src.metadata = _metadata_from_npy(members["metadata"], _rows_declared(src), work_dir, settings)
    return src


def _rows_declared(src: Sources) -> int | None:
    """n as the embeddings' header declares it (None when there are none, or they are not 2-D)."""
    if "embeddings" not in src.arrays:
        return None
    shape = inspect_npy(src.arrays["embeddings"], "embeddings").shape
    return shape[0] if len(shape) == 2 else None


def _metadata_from_npy(path: str, n: int | None, work_dir: str, settings: Settings) -> list[Any] | JsonlRows:
    """metadata in an .npz: n JSON strings, or one JSON string holding the list.

    Sizes come from the header first: a row count that is not the embeddings' n, or a single string
    over the inline limit, is refused before a byte of it is parsed. The rows are then copied a
    chunk at a time into a JSON-lines file (JSON text may hold a line break only as whitespace, so
    each becomes a space), never held as Python objects all at once.
    """
    info = inspect_npy(path, "metadata")
    if info.dtype.kind not in "US":
        raise InvalidInput(
            ErrorCode.VALIDATION, "metadata in an .npz must be JSON text (one string per row)", {"field": "metadata"}
        )
    if info.shape == ():
        if info.nbytes > settings.max_inline_bytes:
            raise TooLarge(
                ErrorCode.TOO_LARGE,
                f"metadata as one JSON string is limited to {settings.max_inline_bytes} bytes; "
                "store one string per row instead",
                {"field": "metadata", "limit_bytes": settings.max_inline_bytes},
            )
        try:
            value = loads(str(load_small(info).item()))
        except ValueError as exc:
            raise InvalidInput(
                ErrorCode.VALIDATION, f"metadata is not valid JSON ({exc})", {"field": "metadata"}
            ) from None
        if not isinstance(value, list):
            raise InvalidInput(ErrorCode.VALIDATION, "metadata must be a JSON list", {"field": "metadata"})
        return value
    if len(info.shape) != 1:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH,
            f"metadata must be 1-D, got shape {list(info.shape)}",
            {"field": "metadata", "shape": list(info.shape)},
        )
    if n is not None and info.shape[0] != n:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH,
            f"metadata has {info.shape[0]} rows but embeddings has n={n} rows",
            {"field": "metadata", "length": info.shape[0], "n": n},
        )
    out = os.path.join(work_dir, "npz-metadata.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for chunk in iter_rows(info, METADATA_CHUNK_BYTES):
            for text in chunk.tolist():
                line = text if isinstance(text, str) else text.decode("utf-8", "replace")
                f.write((line.replace("\r", " ").replace("\n", " ").strip() or "null") + "\n")
    return JsonlRows(out)


def sources_from_parts(parts: list[Part], work_dir: str, settings: Settings) -> Sources:
    names = [p.name for p in parts]
    if not parts:
        raise InvalidInput(ErrorCode.VALIDATION, "the multipart body has no parts; send `file` or .npy fields")
    if len(set(names)) != len(names):
        raise InvalidInput(ErrorCode.VALIDATION, "a field appears twice in the multipart body")
    if "file" in names:
        by_name = {p.name: p for p in parts}
        if set(names) - {"file", "columns"}:
            raise InvalidInput(
                ErrorCode.VALIDATION,
                "send either one `file` (with an optional `columns` part) or separate fields, not both",
            )
        columns = _columns_part(by_name["columns"], settings) if "columns" in by_name else None
        if by_name["file"].size == 0:
            raise InvalidInput(ErrorCode.BAD_FILE, "the uploaded file is empty")
        return sources_from_container(by_name["file"].path, work_dir, settings, "file", columns)
    parts = _canonical_part_names(parts)
    names = [p.name for p in parts]
    unknown = [n for n in names if n not in DATASET_FIELDS]
    if unknown:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"unknown field(s) {unknown}; expected `file` or some of {', '.join(DATASET_FIELDS)}",
            {"unknown": unknown, "allowed": ["file", *DATASET_FIELDS]},
        )
    src = Sources(origin="npy")
    for part in parts:
        kind = _sniff(part.path)
        if part.name in DATASET_ARRAYS:
            if kind != "npy":
                raise InvalidInput(ErrorCode.BAD_FILE, f"{part.name}: expected a .npy file", {"field": part.name})
            src.arrays[part.name] = part.path
        elif part.name == "ids":
            src.ids = part.path if kind == "npy" else _json_list(part, settings, "ids")
        elif part.name == "texts":
            src.texts = part.path if kind == "npy" else _json_list(part, settings, "texts")
        else:  # metadata: a JSON array or JSON lines
            src.metadata = _metadata_part(part, settings)
    return src


def _columns_part(part: Part, settings: Settings) -> dict[str, str]:
    """The `columns` part: a JSON object mapping fields to the file's column names."""
    value = _json_list(part, settings, "columns", want=dict)
    if not all(isinstance(v, str) for v in value.values()):
        raise InvalidInput(
            ErrorCode.VALIDATION, "columns must map each field to a column name (a string)", {"field": "columns"}
        )
    return {str(k): v for k, v in value.items()}


def _canonical_part_names(parts: list[Part]) -> list[Part]:
    """Separate .npy fields may use the names people use (embedding, loss, label, pred, id …)."""
    try:
        by_field = colmap.resolve([p.name for p in parts if p.name != "metadata"])
    except colmap.ColumnError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, exc.message, exc.details) from None
    field_of = {column: field for field, column in by_field.items()}
    for part in parts:
        part.name = field_of.get(part.name, part.name)
    return parts


def _first_char(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096).lstrip()[:1]


def _json_list(part: Part, settings: Settings, field: str, want: type = list) -> Any:
    if part.size > settings.max_inline_bytes:
        raise TooLarge(
            ErrorCode.TOO_LARGE,
            f"{field} as JSON is limited to {settings.max_inline_bytes} bytes; send a .npy instead",
            {"field": field, "limit_bytes": settings.max_inline_bytes},
        )
    try:
        with open(part.path, "rb") as f:
            value = loads(f.read())
    except ValueError as exc:
        raise InvalidInput(ErrorCode.BAD_FILE, f"{field}: not valid JSON ({exc})", {"field": field}) from None
    if not isinstance(value, want):
        kind = "array" if want is list else "object"
        raise InvalidInput(ErrorCode.VALIDATION, f"{field} must be a JSON {kind}", {"field": field})
    return value


def _metadata_part(part: Part, settings: Settings) -> list[Any] | JsonlRows:
    if _first_char(part.path) == b"[":
        return _json_list(part, settings, "metadata")
    return JsonlRows(part.path)


def sources_from_inline(data: InlineDataset, work_dir: str) -> Sources:
    """Inline JSON arrays -> .npy files in the work folder (one validation path for every format)."""
    src = Sources(origin="json")
    for field in DATASET_ARRAYS:
        value = getattr(data, field)
        if value is None:
            continue
        dtype: Any = np.int64 if field in ("labels", "predictions") else np.float64
        if dtype is np.int64 and any(isinstance(v, str) for v in value):
            if not all(isinstance(v, str) for v in value):
                raise InvalidInput(
                    ErrorCode.VALIDATION, f"{field}: mix of class names and integers; give one kind", {"field": field}
                )
            dtype = str  # class names: build() encodes them
        try:
            arr = np.asarray(value, dtype=dtype)
        except (ValueError, OverflowError) as exc:
            code = ErrorCode.SHAPE_MISMATCH if "inhomogeneous" in str(exc) else ErrorCode.VALIDATION
            raise InvalidInput(
                code,
                f"{field}: {'rows differ in length' if code == ErrorCode.SHAPE_MISMATCH else exc}",
                {"field": field},
            ) from None
        if field in ("embeddings", "logits") and arr.ndim == 1 and arr.size == 0:
            arr = arr.reshape(0, 0)
        src.arrays[field] = save_npy(os.path.join(work_dir, f"inline-{field}.npy"), arr)
    src.ids = data.ids
    src.texts = getattr(data, "texts", None)
    src.metadata = data.metadata
    return src


def sources_from_uri(uri: str, work_dir: str, settings: Settings, columns: dict[str, str] | None = None) -> Sources:
    path = fetch_reference(uri, settings, work_dir)
    src = sources_from_container(path, work_dir, settings, "the referenced file", columns)
    src.origin = f"uri+{src.origin}"
    return src


def build_in(work_dir: str, src: Sources, settings: Settings) -> tuple[DatasetBuilder, int, int]:
    """Validate and write canonical files into work_dir/canonical; the builder is ready to commit."""
    builder = DatasetBuilder(os.path.join(work_dir, "canonical"))
    n, d = build(src, settings, builder)
    return builder, n, d


async def receive_parts(request: Request, work_dir: str, settings: Settings) -> list[Part]:
    return await receive_multipart(request, work_dir, settings.max_upload_bytes)


__all__ = [
    "build_from_parts",
    "build_from_spec",
    "build_in",
    "receive_parts",
    "sources_from_inline",
    "sources_from_parts",
    "sources_from_uri",
    "workspace",
]


def build_from_spec(
    spec: InlineDataset | DatasetReference, work_dir: str, settings: Settings
) -> tuple[DatasetBuilder, int, int]:
    """A JSON dataset (inline arrays or {"uri": ...}) -> a builder ready to commit."""
    if isinstance(spec, DatasetReference):
        src = sources_from_uri(spec.uri, work_dir, settings, spec.columns)
    else:
        src = sources_from_inline(spec, work_dir)
    return build_in(work_dir, src, settings)


def build_from_parts(parts: list[Part], work_dir: str, settings: Settings) -> tuple[DatasetBuilder, int, int]:
    return build_in(work_dir, sources_from_parts(parts, work_dir, settings), settings)
