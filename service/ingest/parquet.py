"""Parquet -> Sources: embeddings from a list column or emb_0..emb_{d-1}, every other column metadata.

Read one record batch at a time (pyarrow), so memory follows the batch, not the file. Known
columns (losses, logits, labels, predictions, sample_weights, ids) become arrays; anything else is
copied, row by row, into the metadata that members pages echo back.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.ingest.npy import NpyWriter
from service.ingest.sources import JsonlRows, Sources, json_safe
from spotlight.errors import InvalidInput, TooLarge
from spotlight.protocol import ErrorCode
from spotlight.settings import Settings

_EMB_COL = re.compile(r"^emb_(\d+)$")
SCALAR_FIELDS = ("losses", "labels", "predictions", "sample_weights")
BATCH_ROWS = 16384


def _bad(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(ErrorCode.BAD_FILE, f"parquet: {message}", {"format": "parquet", **details})


def _validation(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(ErrorCode.VALIDATION, f"parquet: {message}", details)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _float_dtype(t: pa.DataType) -> str:
    return "<f4" if pa.types.is_float16(t) or pa.types.is_float32(t) else "<f8"


def parquet_to_sources(path: str, work_dir: str, settings: Settings) -> Sources:
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        n = int(pf.metadata.num_rows)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _bad(f"not a readable Parquet file ({exc})") from None
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise _bad("duplicate column names")

    emb_cols = sorted((c for c in names if _EMB_COL.match(c)), key=lambda c: int(c[4:]))
    if "embeddings" in names:
        layout = "list"
        emb_type = schema.field("embeddings").type
        if not _is_list(emb_type) or not _is_number(emb_type.value_type):
            raise _validation("the embeddings column must be a list of numbers per row", column="embeddings")
        value_type = emb_type.value_type
        d = emb_type.list_size if pa.types.is_fixed_size_list(emb_type) else _first_list_length(pf, n)
        emb_cols = []
    elif emb_cols:
        layout = "columns"
        d = len(emb_cols)
        if [int(c[4:]) for c in emb_cols] != list(range(d)):
            raise _validation(f"embedding columns must be emb_0 … emb_{d - 1} with none missing", columns=emb_cols[:20])
        for c in emb_cols:
            if not _is_number(schema.field(c).type):
                raise _validation(f"column {c} must be numeric", column=c)
        value_type = schema.field(emb_cols[0]).type
    else:
        raise _validation("no embeddings: add a list column `embeddings` or columns emb_0 … emb_{d-1}")
    if n * d > settings.max_elements:
        raise TooLarge(ErrorCode.TOO_MANY_ELEMENTS,
                       f"embeddings has {n * d} elements, over this server's limit of {settings.max_elements}",
                       {"field": "embeddings", "elements": n * d, "limit": settings.max_elements})

    scalars = [f for f in SCALAR_FIELDS if f in names]
    for f in scalars:
        if not _is_number(schema.field(f).type):
            raise _validation(f"column {f} must be numeric", column=f)
    has_logits = "logits" in names
    if has_logits and not (_is_list(schema.field("logits").type) and _is_number(schema.field("logits").type.value_type)):
        raise _validation("the logits column must be a list of numbers per row", column="logits")
    has_ids = "ids" in names
    known = {"embeddings", "logits", "ids", *SCALAR_FIELDS, *emb_cols}
    meta_cols = [c for c in names if c not in known]

    src = Sources(origin="parquet")
    writers: dict[str, NpyWriter] = {}
    writers["embeddings"] = NpyWriter(os.path.join(work_dir, "pq-embeddings.npy"), _float_dtype(value_type), (n, d))
    for f in scalars:
        t = schema.field(f).type
        dtype = "<i8" if pa.types.is_integer(t) and f in ("labels", "predictions") else "<f8"
        writers[f] = NpyWriter(os.path.join(work_dir, f"pq-{f}.npy"), dtype, (n,))
    logits_c: int | None = None
    ids: list[Any] = []
    meta_path = os.path.join(work_dir, "pq-metadata.jsonl")
    meta_file = open(meta_path, "wb") if meta_cols else None  # noqa: SIM115 - closed below
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            rows = batch.num_rows
            if layout == "list":
                writers["embeddings"].write(_list_values(batch.column("embeddings"), d, "embeddings"))
            else:
                writers["embeddings"].write(
                    np.column_stack([_to_numpy(batch.column(c), c) for c in emb_cols]).reshape(rows, d)
                )
            for f in scalars:
                writers[f].write(_to_numpy(batch.column(f), f))
            if has_logits:
                col = batch.column("logits")
                if logits_c is None:
                    logits_c = _list_length_of(col)
                    writers["logits"] = NpyWriter(os.path.join(work_dir, "pq-logits.npy"), "<f8", (n, logits_c))
                writers["logits"].write(_list_values(col, logits_c, "logits"))
            if has_ids:
                ids.extend(batch.column("ids").to_pylist())
            if meta_file is not None:
                for row in batch.select(meta_cols).to_pylist():
                    meta_file.write(json.dumps(json_safe(row), allow_nan=False).encode() + b"\n")
    except InvalidInput:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _bad(f"could not read the data ({exc})") from None
    finally:
        for w in writers.values():
            w.close()
        if meta_file is not None:
            meta_file.close()
    src.arrays = {f: w.path for f, w in writers.items()}
    if has_ids:
        src.ids = ids
    if meta_cols:
        src.metadata = JsonlRows(meta_path)
    return src


def _to_numpy(col: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """A numeric column as numpy; nulls become NaN, so validation reports them as non-finite."""
    if col.null_count:
        col = col.cast(pa.float64())
    arr = col.to_numpy(zero_copy_only=False)
    return arr.astype(np.float64) if arr.dtype == bool else arr


def _list_length_of(col: pa.Array) -> int:
    if pa.types.is_fixed_size_list(col.type):
        return int(col.type.list_size)
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    return int(lengths[0]) if len(lengths) else 0


def _list_values(col: pa.Array, width: int, name: str) -> np.ndarray:
    """Rows of a list column as an (rows x width) array; every row must have `width` entries."""
    if col.null_count:
        raise InvalidInput(ErrorCode.NON_FINITE, f"{name} has null rows; every row needs {width} numbers",
                       {"field": name})
    if not pa.types.is_fixed_size_list(col.type):
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        if (lengths != width).any():
            bad = int(np.argwhere(lengths != width)[0][0])
            raise InvalidInput(ErrorCode.SHAPE_MISMATCH,
                           f"{name} rows differ in length: expected {width}, a row has {int(lengths[bad])}",
                           {"field": name, "expected": width, "found": int(lengths[bad])})
    values = col.flatten()
    if values.null_count:
        values = values.cast(pa.float64())
    return values.to_numpy(zero_copy_only=False).reshape(len(col), width)


def _first_list_length(pf: pq.ParquetFile, n: int) -> int:
    if n == 0:
        return 0
    for batch in pf.iter_batches(batch_size=1, columns=["embeddings"]):
        col = batch.column(0)
        if col.null_count:
            raise InvalidInput(ErrorCode.NON_FINITE, "embeddings has null rows", {"field": "embeddings"})
        return _list_length_of(col)
    return 0
