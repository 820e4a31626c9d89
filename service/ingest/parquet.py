"""Parquet -> Sources: embeddings from a list column or emb_0..emb_{d-1}, every other column metadata.

Read one record batch at a time (pyarrow), so memory follows the batch, not the file. Which column
is which field follows spotlight/contract/columns.py (the names people use — embedding, loss, label, pred,
id … — or the caller's mapping); anything else is copied, row by row, into the metadata that
members pages echo back. Text labels/predictions become codes plus class names
(spotlight/contract/classes.py); a Hugging Face export's ClassLabel names are read from the schema metadata
`datasets` writes, and its Image columns (or any column of image bytes) become small data: URIs
the report shows as thumbnails (service/ingest/images.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.ingest.build import check_class_count
from service.ingest.images import ImageBudget, image_value
from service.ingest.npy import NpyWriter
from service.ingest.sources import JsonlRows, Sources, json_safe
from spotlight.contract import classes
from spotlight.contract import columns as colmap
from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import ErrorCode
from spotlight.server.settings import Settings

_EMB_COL = re.compile(r"emb_([0-9]+)")
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


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_image(t: pa.DataType, feature: Any) -> bool:
    """A HF Image feature, a struct<bytes: binary, path: string>, or a plain binary column."""
    if isinstance(feature, dict) and feature.get("_type") == "Image":
        return True
    if pa.types.is_struct(t):
        names = {t.field(i).name for i in range(t.num_fields)}
        return "bytes" in names and _is_binary(t.field("bytes").type)
    return _is_binary(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The `datasets` library's features dict stored in the schema metadata (empty when absent)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _class_label_names(feature: Any) -> list[str] | None:
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(x) for x in feature["names"]]
    return None


def parquet_to_sources(
    path: str, work_dir: str, settings: Settings, columns: Mapping[str, str] | None = None
) -> Sources:
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        n = int(pf.metadata.num_rows)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _bad(f"not a readable Parquet file ({exc})") from None
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise _bad("duplicate column names")
    features = hf_features(schema)
    emb_cols = sorted((c for c in names if _EMB_COL.fullmatch(c)), key=lambda c: int(c[4:]))
    try:
        col_of = colmap.resolve([c for c in names if c not in emb_cols], columns)
    except colmap.ColumnError as exc:
        raise _validation(exc.message, **exc.details) from None

    if "embeddings" in col_of:
        layout = "list"
        emb_name = col_of["embeddings"]
        emb_type = schema.field(emb_name).type
        if not _is_list(emb_type) or not _is_number(emb_type.value_type):
            raise _validation(
                f"the embeddings column {emb_name!r} must be a list of numbers per row",
                column=emb_name,
                type=str(emb_type),
            )
        value_type = emb_type.value_type
        d = emb_type.list_size if pa.types.is_fixed_size_list(emb_type) else _first_list_length(pf, n, emb_name)
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
        raise _validation(colmap.missing_embeddings_message(names), columns=names[:200])
    if n * d > settings.max_elements:
        raise TooLarge(
            ErrorCode.TOO_MANY_ELEMENTS,
            f"embeddings has {n * d} elements, over this server's limit of {settings.max_elements}",
            {"field": "embeddings", "elements": n * d, "limit": settings.max_elements},
        )

    scalars = [f for f in SCALAR_FIELDS if f in col_of]
    text = [f for f in ("labels", "predictions") if f in col_of and _is_text(schema.field(col_of[f]).type)]
    for f in scalars:
        t = schema.field(col_of[f]).type
        if not _is_number(t) and f not in text:
            kind = "numbers or class names (text)" if f in ("labels", "predictions") else "numeric"
            raise _validation(f"column {col_of[f]!r} ({f}) must be {kind}, not {t}", column=col_of[f], field=f)
    class_names = _classes(pf, schema, features, col_of, text)
    has_logits = "logits" in col_of
    if has_logits:
        lt = schema.field(col_of["logits"]).type
        if not (_is_list(lt) and _is_number(lt.value_type)):
            raise _validation(
                f"the logits column {col_of['logits']!r} must be a list of numbers per row", column=col_of["logits"]
            )
    has_ids = "ids" in col_of
    has_texts = "texts" in col_of
    known = {*col_of.values(), *emb_cols}
    meta_cols = [c for c in names if c not in known]
    image_cols = {c for c in meta_cols if _is_image(schema.field(c).type, features.get(c))}
    image_budget = ImageBudget()  # pixels this upload may decode in all (service/ingest/images.py)

    src = Sources(origin="parquet", class_names=class_names)
    writers: dict[str, NpyWriter] = {}
    writers["embeddings"] = NpyWriter(os.path.join(work_dir, "pq-embeddings.npy"), _float_dtype(value_type), (n, d))
    for f in scalars:
        t = schema.field(col_of[f]).type
        dtype = "<i8" if f in text or (pa.types.is_integer(t) and f in ("labels", "predictions")) else "<f8"
        writers[f] = NpyWriter(os.path.join(work_dir, f"pq-{f}.npy"), dtype, (n,))
    vocab = pa.array(class_names or [], type=pa.string())
    logits_c: int | None = None
    ids: list[Any] = []
    texts_path = os.path.join(work_dir, "pq-texts.jsonl")
    texts_file = open(texts_path, "wb") if has_texts else None  # noqa: SIM115 - closed below
    meta_path = os.path.join(work_dir, "pq-metadata.jsonl")
    meta_file = open(meta_path, "wb") if meta_cols else None  # noqa: SIM115 - closed below
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            rows = batch.num_rows
            if layout == "list":
                writers["embeddings"].write(_list_values(batch.column(emb_name), d, "embeddings"))
            else:
                writers["embeddings"].write(
                    np.column_stack([_to_numpy(batch.column(c), c) for c in emb_cols]).reshape(rows, d)
                )
            for f in scalars:
                col = batch.column(col_of[f])
                writers[f].write(_codes(col, vocab, f) if f in text else _to_numpy(col, f))
            if has_logits:
                col = batch.column(col_of["logits"])
                if logits_c is None:
                    logits_c = _list_length_of(col)
                    writers["logits"] = NpyWriter(os.path.join(work_dir, "pq-logits.npy"), "<f8", (n, logits_c))
                writers["logits"].write(_list_values(col, logits_c, "logits"))
            if has_ids:
                ids.extend(batch.column(col_of["ids"]).to_pylist())
            if texts_file is not None:  # streamed to disk: n texts never sit in the API's memory
                for value in batch.column(col_of["texts"]).to_pylist():
                    texts_file.write(json.dumps(json_safe(value)).encode() + b"\n")
            if meta_file is not None:
                for row in batch.select(meta_cols).to_pylist():
                    for c in image_cols:
                        row[c] = image_value(row[c], image_budget)
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
        if texts_file is not None:
            texts_file.close()
    src.arrays = {f: w.path for f, w in writers.items()}
    if has_ids:
        src.ids = ids
    if has_texts:
        src.texts = JsonlRows(texts_path)
    if meta_cols:
        src.metadata = JsonlRows(meta_path)
    return src


def _classes(
    pf: pq.ParquetFile, schema: pa.Schema, features: dict[str, Any], col_of: dict[str, str], text: Sequence[str]
) -> list[str] | None:
    """Class names of labels/predictions: a ClassLabel's names, then every text value (sorted), or None."""
    named = [_class_label_names(features.get(col_of[f])) for f in ("labels", "predictions") if f in col_of]
    names = next((x for x in named if x), None)
    if not text:
        return names
    ints = [f for f in ("labels", "predictions") if f in col_of and f not in text]
    if ints and names is None:
        raise _validation(
            f"{text[0]} are class names but {ints[0]} are integers; give both as names, or both as class indices",
            field=ints[0],
        )
    uniques: list[Any] = []
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[col_of[f] for f in text]):
        for i in range(batch.num_columns):
            col = batch.column(i)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            uniques.append(pc.unique(col.drop_null()).to_pylist())
    vocab = classes.vocabulary(uniques, names)
    check_class_count(vocab, text[0])
    return vocab


def _codes(col: pa.Array, vocab: pa.Array, name: str) -> np.ndarray:
    """Text classes -> their int64 codes in `vocab`; a missing class name is an error, not a guess."""
    if col.null_count:
        row = int(np.argwhere(col.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise InvalidInput(
            ErrorCode.NON_FINITE,
            f"{name} has a missing (null) class name; every row needs one",
            {"field": name, "row_in_batch": row},
        )
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return pc.index_in(col.cast(pa.string()), value_set=vocab).to_numpy(zero_copy_only=False).astype(np.int64)


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
        raise InvalidInput(
            ErrorCode.NON_FINITE, f"{name} has null rows; every row needs {width} numbers", {"field": name}
        )
    if not pa.types.is_fixed_size_list(col.type):
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        if (lengths != width).any():
            bad = int(np.argwhere(lengths != width)[0][0])
            raise InvalidInput(
                ErrorCode.SHAPE_MISMATCH,
                f"{name} rows differ in length: expected {width}, a row has {int(lengths[bad])}",
                {"field": name, "expected": width, "found": int(lengths[bad])},
            )
    values = col.flatten()
    if values.null_count:
        values = values.cast(pa.float64())
    return values.to_numpy(zero_copy_only=False).reshape(len(col), width)


def _first_list_length(pf: pq.ParquetFile, n: int, column: str = "embeddings") -> int:
    if n == 0:
        return 0
    for batch in pf.iter_batches(batch_size=1, columns=[column]):
        col = batch.column(0)
        if col.null_count:
            raise InvalidInput(ErrorCode.NON_FINITE, "embeddings has null rows", {"field": "embeddings"})
        return _list_length_of(col)
    return 0
