"""Validate a `Sources` and write its canonical form with `DatasetBuilder`, chunk by chunk.

Cheap checks come first (headers, shapes, lengths, size limits), so a wrong upload is refused
before its data is read; then one pass per field converts, checks values (finite, integral,
non-negative, labels within the logits' classes) and writes. Any error leaves only the private
work folder behind, which the caller removes: nothing reaches the store half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from service.ingest.npy import NpyInfo, inspect_npy, iter_rows, load_small, save_npy
from service.ingest.sources import MAX_JSON_DEPTH, JsonlRows, Sources, too_deep
from spotlight.contract import classes
from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import ErrorCode
from spotlight.server.dataset_files import DatasetBuilder
from spotlight.server.settings import Settings

NUMERIC_KINDS = "fiub"
INT64_MAX = float(2**63 - 1)
MAX_CLASSES = 100_000  # more distinct text labels than this is an id column, not classes


def _validation(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(ErrorCode.VALIDATION, message, details)


def _mismatch(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(ErrorCode.SHAPE_MISMATCH, message, details)


def _numeric(info: NpyInfo, field: str) -> None:
    if info.dtype.kind not in NUMERIC_KINDS or info.dtype.fields is not None:
        raise _validation(f"{field} must hold numbers, not dtype {info.dtype}", field=field, dtype=str(info.dtype))


def _finite_rows(info: NpyInfo, field: str) -> Iterator[np.ndarray]:
    """Row chunks as float64 after checking every value is finite (float32 overflow counts as inf)."""
    start = 0
    for chunk in iter_rows(info):
        c = chunk.astype(np.float64, copy=False)
        bad = ~np.isfinite(c)
        if field in ("embeddings", "losses", "sample_weights"):
            with np.errstate(over="ignore"):
                bad |= ~np.isfinite(c.astype(np.float32))
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise InvalidInput(
                ErrorCode.NON_FINITE,
                f"{field} has NaN or infinite values (first at row {row}); remove or impute them",
                {"field": field, "row": row},
            )
        start += c.shape[0]
        yield c


def _int_rows(info: NpyInfo, field: str) -> Iterator[np.ndarray]:
    """Row chunks as int64; floats are accepted only when every value is a whole number."""
    start = 0
    for chunk in iter_rows(info):
        if chunk.dtype.kind == "f":
            bad = ~np.isfinite(chunk) | (chunk != np.round(chunk)) | (np.abs(chunk) > INT64_MAX)
            if bad.any():
                row = start + int(np.argwhere(bad)[0][0])
                raise _validation(
                    f"{field} must be whole numbers (row {row} is {float(chunk[row - start])!r})", field=field, row=row
                )
        elif chunk.dtype.kind == "u" and chunk.dtype.itemsize == 8 and chunk.size and chunk.max() > 2**63 - 1:
            raise _validation(f"{field} has values beyond int64", field=field)
        start += chunk.shape[0]
        yield chunk.astype(np.int64)


def _one_d(infos: dict[str, NpyInfo], field: str, n: int) -> None:
    info = infos[field]
    if len(info.shape) != 1:
        raise _mismatch(
            f"{field} must be 1-D with n={n} entries, got shape {list(info.shape)}",
            field=field,
            shape=list(info.shape),
            n=n,
        )
    if info.shape[0] != n:
        raise _mismatch(
            f"{field} has {info.shape[0]} entries but embeddings has n={n} rows", field=field, length=info.shape[0], n=n
        )


def _load_ids(src: Sources, n: int) -> list[Any] | None:
    if src.ids is None:
        return None
    if isinstance(src.ids, str):
        info = inspect_npy(src.ids, "ids")
        if info.dtype.kind not in "iuUS" or len(info.shape) != 1:
            raise _validation("ids must be a 1-D array of strings or integers", field="ids", dtype=str(info.dtype))
        if info.shape[0] != n:  # from the header, before the ids are loaded
            raise _mismatch(
                f"ids has {info.shape[0]} entries but embeddings has n={n} rows", field="ids", length=info.shape[0], n=n
            )
        arr = load_small(info)
        ids: list[Any] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in arr.tolist()]
    else:
        ids = list(src.ids)
    if len(ids) != n:
        raise _mismatch(f"ids has {len(ids)} entries but embeddings has n={n} rows", field="ids", length=len(ids), n=n)
    for i, v in enumerate(ids):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise _validation(f"ids[{i}] must be a string or an integer", field="ids", row=i)
    return ids


def _load_texts(src: Sources, n: int) -> Iterable[Any] | None:
    """The rows' texts, checked for count now and value by value as they are written (a JSON-lines
    file is streamed, never loaded whole)."""
    if src.texts is None:
        return None
    raw: Iterable[Any]
    if isinstance(src.texts, JsonlRows):
        count = src.texts.count()
        raw = src.texts
    elif isinstance(src.texts, str):
        info = inspect_npy(src.texts, "texts")
        if len(info.shape) != 1 or info.dtype.kind not in "US":
            raise _validation("texts must be a 1-D array of strings", field="texts", dtype=str(info.dtype))
        count = info.shape[0]  # from the header, before the texts are loaded
        raw = (text for chunk in iter_rows(info) for text in chunk.tolist())  # a few MB at a time
    else:
        count, raw = len(src.texts), src.texts
    if count != n:
        raise _mismatch(f"texts has {count} entries but embeddings has n={n} rows", field="texts", length=count, n=n)
    return raw


def _text_rows(raw: Iterable[Any]) -> Iterator[str]:
    """Each text as a string: bytes decoded, None (a missing value) as ""; anything else is refused."""
    for i, v in enumerate(raw):
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise _validation(f"texts[{i}] must be a string", field="texts", row=i)
        yield v


def _metadata_rows(rows: Any) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _validation(f"metadata[{i}] must be a JSON object", field="metadata", row=i)
        if too_deep(row):
            raise _validation(
                f"metadata[{i}] nests deeper than {MAX_JSON_DEPTH} levels",
                field="metadata",
                row=i,
                limit=MAX_JSON_DEPTH,
            )
        try:
            json.dumps(row, allow_nan=False)
        except ValueError:
            raise _validation(
                f"metadata[{i}] holds NaN or infinity, which JSON cannot carry", field="metadata", row=i
            ) from None
        yield row


def build(src: Sources, settings: Settings, builder: DatasetBuilder) -> tuple[int, int]:
    """Validate and write every field; return (n, dim). Raises InvalidInput (or TooLarge) with the contract's codes."""
    if "embeddings" not in src.arrays:
        raise _validation("embeddings is required (an n x d array)", field="embeddings")
    infos = {f: inspect_npy(p, f) for f, p in src.arrays.items()}
    encode_text_classes(src, infos)
    for f, info in infos.items():
        _numeric(info, f)

    emb = infos["embeddings"]
    if len(emb.shape) != 2:
        raise _validation(
            f"embeddings must be 2-D (n x d), got shape {list(emb.shape)}", field="embeddings", shape=list(emb.shape)
        )
    n, d = emb.shape
    if n == 0 or d == 0:
        raise _validation(
            f"embeddings is empty (shape {[n, d]}); need n >= 1 rows and d >= 1 dimensions",
            field="embeddings",
            shape=[n, d],
        )
    for f, info in infos.items():
        elements = info.elements
        if elements > settings.max_elements:
            raise TooLarge(
                ErrorCode.TOO_MANY_ELEMENTS,
                f"{f} has {elements} elements, over this server's limit of {settings.max_elements}",
                {"field": f, "elements": elements, "limit": settings.max_elements},
            )

    has_losses = "losses" in infos
    if not has_losses and not ("logits" in infos and "labels" in infos):
        raise _validation("losses is required (n floats), or logits (n x c) together with labels", field="losses")
    for f in ("losses", "labels", "predictions", "sample_weights"):
        if f in infos:
            _one_d(infos, f, n)
    use_logits = not has_losses
    if "logits" in infos:
        lg = infos["logits"]
        if len(lg.shape) != 2 or lg.shape[0] != n or lg.shape[1] < 1:
            raise _mismatch(
                f"logits must be n x c with n={n}, got shape {list(lg.shape)}",
                field="logits",
                shape=list(lg.shape),
                n=n,
            )
    ids = _load_ids(src, n)
    texts = _load_texts(src, n)
    metadata = src.metadata
    if metadata is not None:
        count = metadata.count() if isinstance(metadata, JsonlRows) else len(metadata)
        if count != n:
            raise _mismatch(
                f"metadata has {count} rows but embeddings has n={n} rows", field="metadata", length=count, n=n
            )

    # --- value passes, each writing its canonical file ---
    builder.add_array("embeddings", (n, d), _finite_rows(emb, "embeddings"))
    if use_logits:
        builder.add_array("losses", (n,), _cross_entropy(infos["logits"], infos["labels"]))
        builder.extra["losses_from"] = "logits"
    else:
        builder.add_array("losses", (n,), _finite_rows(infos["losses"], "losses"))
    for f in ("labels", "predictions"):
        if f in infos:
            builder.add_array(f, (n,), _int_rows(infos[f], f))
    if "sample_weights" in infos:
        builder.add_array("sample_weights", (n,), _non_negative(infos["sample_weights"]))
    if ids is not None:
        builder.add_ids(ids)
    if texts is not None:
        builder.add_texts(_text_rows(texts), n)
    if metadata is not None:
        builder.add_metadata(_metadata_rows(metadata), n)
    if src.class_names is not None and ("labels" in infos or "predictions" in infos):
        builder.extra[classes.MANIFEST_KEY] = list(src.class_names)
    if src.origin:
        builder.extra["source_format"] = src.origin
    return n, d


def check_class_count(names: list[str], field: str) -> None:
    if len(names) > MAX_CLASSES:
        raise _validation(
            f"{field} has {len(names)} distinct classes, over {MAX_CLASSES}; is it an id column?",
            field=field,
            classes=len(names),
            limit=MAX_CLASSES,
        )


def encode_text_classes(src: Sources, infos: dict[str, NpyInfo]) -> None:
    """Labels/predictions given as text -> int codes (.npy beside the original) + src.class_names.

    Labels and predictions share one vocabulary (so label == prediction still compares codes);
    text on one side and bare integers on the other has no common meaning and is refused.
    """
    text: list[str] = [f for f in ("labels", "predictions") if f in infos and infos[f].dtype.kind in "US"]
    if not text:
        return
    ints = [f for f in ("labels", "predictions") if f in infos and f not in text]
    if ints and src.class_names is None:
        raise _validation(
            f"{text[0]} are class names but {ints[0]} are integers; give both as names, or both as class indices",
            field=ints[0],
        )
    values: dict[str, np.ndarray] = {}
    for f in text:
        if len(infos[f].shape) != 1:
            raise _mismatch(f"{f} must be 1-D, got shape {list(infos[f].shape)}", field=f, shape=list(infos[f].shape))
        arr = load_small(infos[f])
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8", errors="replace")
        values[f] = arr
    names = classes.vocabulary((np.unique(v) for v in values.values()), src.class_names)
    check_class_count(names, text[0])
    for f, arr in values.items():
        path = save_npy(os.path.join(os.path.dirname(infos[f].path), f"coded-{f}.npy"), classes.encode(arr, names))
        src.arrays[f] = path
        infos[f] = inspect_npy(path, f)
    src.class_names = names


def _non_negative(info: NpyInfo) -> Iterator[np.ndarray]:
    start = 0
    for c in _finite_rows(info, "sample_weights"):
        if (c < 0).any():
            row = start + int(np.argwhere(c < 0)[0][0])
            raise _validation(f"sample_weights must be >= 0 (row {row} is negative)", field="sample_weights", row=row)
        start += c.shape[0]
        yield c


def _cross_entropy(logits: NpyInfo, labels: NpyInfo) -> Iterator[np.ndarray]:
    """Per-example cross-entropy, log-sum-exp shifted by the row max so large logits cannot overflow."""
    c = logits.shape[1]
    label_chunks = _rechunk(_int_rows(labels, "labels"))
    start = 0
    for z in _finite_rows(logits, "logits"):
        y = label_chunks(z.shape[0])
        if ((y < 0) | (y >= c)).any():
            row = start + int(np.argwhere((y < 0) | (y >= c))[0][0])
            raise _validation(
                f"labels must be class indices in [0, {c}) to match the logits (row {row})",
                field="labels",
                row=row,
                n_classes=c,
            )
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        start += z.shape[0]
        yield lse - z[np.arange(z.shape[0]), y]


def _rechunk(chunks: Iterator[np.ndarray]) -> Any:
    """Serve exactly k items at a time from an iterator of arbitrary-sized chunks."""
    buf = np.empty(0, dtype=np.int64)

    def take(k: int) -> np.ndarray:
        nonlocal buf
        while buf.shape[0] < k:
            buf = np.concatenate([buf, next(chunks)])
        out, buf = buf[:k], buf[k:]
        return out

    return take
