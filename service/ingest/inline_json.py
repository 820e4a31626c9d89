"""An inline JSON dataset body read in slices, so its memory stays a small multiple of its size.

`json.loads` on a whole body turns every number into a Python object: 32 bytes or more for a
number written in 2 characters ("0,"), so a 54 MB body of short numbers took 3 GB before anything
was checked. Here the body is walked key by key at the top level; each numeric array is decoded a
slice of about `SLICE_CHARS` characters at a time (the stdlib decoder on a few rows, then numpy)
and appended to a file on disk, and each metadata row goes to a JSON-lines file as it is read.
What stays in memory is the body itself, one slice's objects, and the ids. The result is the same
`Sources` as every other format, validated by service/ingest/build.py.

The stdlib decoder reads every slice, so the body's grammar is Python's json module's (NaN and
Infinity included, refused later as non-finite values, as for other formats).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.errors import validation_error
from service.ingest.npy import NpyWriter, save_npy
from service.ingest.sources import MAX_JSON_DEPTH, JsonlRows, Sources, too_deep
from service.schemas import DatasetReference
from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import DATASET_ARRAYS, DATASET_FIELDS, ErrorCode

# ~5 ms of the stdlib decoder, which holds the interpreter lock throughout: a body parsed in a request's
# thread leaves the event loop (and /healthz) the lock every few ms, however large the body
SLICE_CHARS = 1 << 15
_INT_FIELDS = ("labels", "predictions")
_MATRICES = ("embeddings", "logits")
_WS = " \t\n\r"
_DECODER = json.JSONDecoder()
_MATRIX_END = re.compile(r"\][ \t\n\r]*\]")
_NOT_NUMBERS = re.compile(r'true|false|null|"|\{')
_URI_KEY = re.compile(r'"uri"\s*:')
MAX_REFERENCE_CHARS = 64 * 1024


def _malformed(message: str, position: int) -> InvalidInput:
    return InvalidInput(
        ErrorCode.MALFORMED_JSON,
        f"The body is not valid JSON ({message} at character {position}).",
        {"position": position},
    )


def _invalid(field: str, problem: str, code: str = ErrorCode.VALIDATION) -> InvalidInput:
    message = f"Invalid request: {field}: {problem}"
    return InvalidInput(code, message, {"errors": [{"field": field, "problem": problem, "type": "inline_json"}]})


class _Text:
    """The body as text with a cursor, and the few grammar steps the top level needs."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def skip_ws(self) -> None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def peek(self) -> str:
        self.skip_ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise _malformed(f"expected {ch!r}", self.i)
        self.i += 1

    def value(self) -> Any:
        """One whole JSON value (small ones only: strings, ids, one metadata row)."""
        self.skip_ws()
        try:
            value, self.i = _DECODER.raw_decode(self.s, self.i)
        except json.JSONDecodeError as exc:
            raise _malformed(exc.msg, exc.pos) from None
        except RecursionError:
            raise _malformed("nested too deeply", self.i) from None
        return value


def _numeric_slices(t: _Text, field: str) -> Any:
    """Yield lists decoded from consecutive slices of the array at the cursor (its elements are
    numbers, or rows of numbers for a matrix); leaves the cursor after the closing bracket.

    A slice ends after a whole element. In a vector of numbers the first ']' closes the array; in
    a matrix a ']' after a number closes a row and a ']' after a row's ']' closes the matrix.
    """
    t.expect("[")
    if t.peek() == "]":
        t.i += 1
        return
    s = t.s
    matrix = field in _MATRICES
    if matrix and t.peek() != "[":
        raise _invalid(field, "must be a list of rows (lists of numbers)")
    close = -1 if matrix else s.find("]", t.i)
    if not matrix and close < 0:
        raise _malformed("unterminated array", len(s))
    while True:
        start = t.i
        window = min(start + SLICE_CHARS, len(s))
        if matrix:
            row_end = s.find("]", window - 1)
            own_end = _MATRIX_END.search(s, start, row_end + 1 if row_end >= 0 else len(s))
            if own_end is not None:
                cut = own_end.start() + 1
            elif row_end >= 0:
                cut = row_end + 1
            else:
                raise _malformed("unterminated array", len(s))
        elif close <= window:
            cut = close
        else:
            cut = window
            while cut < close and s[cut] != ",":
                cut += 1
        chunk = s[start:cut]
        if matrix and chunk.lstrip()[:1] != "[":
            raise _invalid(field, "must be a list of rows (lists of numbers)")
        if _NOT_NUMBERS.search(chunk):
            raise _invalid(field, "must hold numbers only (no booleans, nulls, text or objects)")
        try:
            items = json.loads("[" + chunk + "]")
        except json.JSONDecodeError as exc:
            if not matrix and ("[" in chunk or "{" in chunk):
                raise _invalid(field, "must be a list of numbers") from None
            raise _malformed(exc.msg, start + max(exc.pos - 1, 0)) from None
        except RecursionError:
            raise _malformed("nested too deeply", start) from None
        yield items
        t.i = cut
        ch = t.peek()
        if ch == ",":
            t.i += 1
            continue
        if ch == "]":
            t.i += 1
            return
        raise _malformed("expected ',' or ']'", t.i)


def _as_array(items: list[Any], field: str) -> np.ndarray:
    """A slice's items as a numeric array: float64, or int64 for labels/predictions."""
    try:
        arr = np.asarray(items)
    except ValueError as exc:
        if "inhomogeneous" in str(exc):
            raise _invalid(field, "rows differ in length", ErrorCode.SHAPE_MISMATCH) from None
        raise _invalid(field, str(exc)) from None
    if arr.dtype.kind == "O":  # integers beyond int64, or mixed types
        try:
            arr = np.asarray(items, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise _invalid(field, "must hold numbers only") from None
    if arr.dtype.kind not in "iuf":
        raise _invalid(field, f"must hold numbers only, not {'booleans' if arr.dtype.kind == 'b' else 'text'}")
    want_rows = field in _MATRICES
    if arr.ndim != (2 if want_rows else 1):
        raise _invalid(field, "must be a list of rows (lists of numbers)" if want_rows else "must be a list of numbers")
    if field in _INT_FIELDS:
        if arr.dtype.kind == "f" and (
            not np.isfinite(arr).all() or (arr != np.round(arr)).any() or (np.abs(arr) > 2.0**63 - 1).any()
        ):
            raise _invalid(field, "must be whole numbers")
        return arr.astype(np.int64)
    return arr.astype(np.float64)


def _class_names(t: _Text, field: str, work_dir: str) -> str:
    """labels/predictions given as class names: kept as text (build() decides what they mean)."""
    names = []
    for i, value in enumerate(_read_rows(t, field)):
        if not isinstance(value, str):
            raise _invalid(f"{field}.{i}", "mix of class names and integers; give one kind")
        names.append(value)
    return save_npy(os.path.join(work_dir, f"inline-{field}.npy"), np.asarray(names, dtype=str))


def _first_element(t: _Text) -> str:
    """The first character of the array's first element (the cursor stays at the '[')."""
    i = t.i + 1
    while i < len(t.s) and t.s[i] in _WS:
        i += 1
    return t.s[i] if i < len(t.s) else ""


def _read_array(t: _Text, field: str, work_dir: str) -> str | None:
    """Stream the array at the cursor into a .npy in `work_dir`; None for a JSON null."""
    if t.peek() == "n":
        if t.value() is not None:
            raise _invalid(field, "must be a list")
        return None
    if t.peek() != "[":
        raise _invalid(field, "must be a list" + (" of rows" if field in _MATRICES else " of numbers"))
    if field in _INT_FIELDS and _first_element(t) == '"':
        return _class_names(t, field, work_dir)
    raw_path = os.path.join(work_dir, f"inline-{field}.raw")
    dtype = np.dtype(np.int64 if field in _INT_FIELDS else np.float64)
    rows = 0
    width: int | None = None
    with open(raw_path, "wb") as raw:
        for items in _numeric_slices(t, field):
            arr = _as_array(items, field)
            if arr.ndim == 2:
                if width is None:
                    width = arr.shape[1]
                elif arr.shape[1] != width:
                    raise _invalid(field, "rows differ in length", ErrorCode.SHAPE_MISMATCH)
            rows += arr.shape[0]
            raw.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    shape: tuple[int, ...] = (rows, width or 0) if field in _MATRICES else (rows,)
    path = os.path.join(work_dir, f"inline-{field}.npy")
    writer = NpyWriter(path, dtype, shape)
    try:
        with open(raw_path, "rb") as raw:
            shutil.copyfileobj(raw, writer._f, 1 << 20)
    finally:
        writer.close()
        os.remove(raw_path)
    return path


def _read_rows(t: _Text, field: str) -> Any:
    """Yield the elements of the array at the cursor one by one (ids, metadata rows)."""
    t.expect("[")
    if t.peek() == "]":
        t.i += 1
        return
    while True:
        yield t.value()
        ch = t.peek()
        t.i += 1
        if ch == "]":
            return
        if ch != ",":
            raise _malformed("expected ',' or ']'", t.i - 1)


def _read_metadata(t: _Text, work_dir: str) -> JsonlRows | None:
    if t.peek() == "n":
        t.value()
        return None
    if t.peek() != "[":
        raise _invalid("metadata", "must be a list of objects")
    path = os.path.join(work_dir, "inline-metadata.jsonl")
    with open(path, "w", encoding="utf-8") as out:
        for i, row in enumerate(_read_rows(t, "metadata")):
            if not isinstance(row, dict):
                raise _invalid(f"metadata.{i}", "must be a JSON object")
            if too_deep(row):
                raise _invalid(f"metadata.{i}", f"nests deeper than {MAX_JSON_DEPTH} levels")
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    return JsonlRows(path)


def _read_texts(t: _Text) -> list[Any] | None:
    if t.peek() == "n":
        t.value()
        return None
    if t.peek() != "[":
        raise _invalid("texts", "must be a list of strings")
    texts = []
    for i, value in enumerate(_read_rows(t, "texts")):
        if not (value is None or isinstance(value, str)):
            raise _invalid(f"texts.{i}", "must be a string")
        texts.append(value)
    return texts


def _read_ids(t: _Text) -> list[Any] | None:
    if t.peek() == "n":
        t.value()
        return None
    if t.peek() != "[":
        raise _invalid("ids", "must be a list of strings or integers")
    ids = []
    for i, value in enumerate(_read_rows(t, "ids")):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _invalid(f"ids.{i}", "must be a string or an integer")
        ids.append(value)
    return ids


def _reference(text: str) -> DatasetReference | None:
    """The body as a `DatasetReference` when it is one (a small object with a `uri`), else None."""
    if len(text) > MAX_REFERENCE_CHARS or not _URI_KEY.search(text):
        return None
    t = _Text(text)
    body = t.value()
    if t.peek():
        raise _malformed("extra data after the object", t.i)
    if not isinstance(body, dict) or "uri" not in body:
        return None
    try:
        return DatasetReference.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None  # the API's wording of a model's errors


def parse_dataset_body(raw: bytes, work_dir: str) -> Sources | DatasetReference:
    """An inline dataset body -> `Sources` with its arrays on disk; a `{"uri": ...}` body -> the
    validated `DatasetReference` (small: parsed whole, by the model).

    Raises 400 malformed_json / validation_error / shape_mismatch like the pydantic models would.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed("not UTF-8", exc.start) from None
    reference = _reference(text)
    if reference is not None:
        return reference
    t = _Text(text)
    t.expect("{")
    src = Sources(origin="json")
    seen: set[str] = set()
    if t.peek() == "}":
        t.i += 1
    else:
        while True:
            if t.peek() != '"':
                raise _malformed("expected a key", t.i)
            key = t.value()
            t.expect(":")
            if key in seen:
                raise _invalid(key, "appears twice")
            seen.add(key)
            if key in DATASET_ARRAYS:
                path = _read_array(t, key, work_dir)
                if path is not None:
                    src.arrays[key] = path
            elif key == "ids":
                src.ids = _read_ids(t)
            elif key == "texts":
                src.texts = _read_texts(t)
            elif key == "metadata":
                src.metadata = _read_metadata(t, work_dir)
            elif key == "uri":
                raise _invalid(
                    "uri",
                    f"a reference body has only `uri` (and its options), at most {MAX_REFERENCE_CHARS} characters",
                )
            else:
                raise _invalid(str(key)[:100], f"unknown field; expected some of {', '.join(DATASET_FIELDS)}, or uri")
            ch = t.peek()
            t.i += 1
            if ch == "}":
                break
            if ch != ",":
                raise _malformed("expected ',' or '}'", t.i - 1)
    if t.peek():
        raise _malformed("extra data after the object", t.i)
    if "embeddings" not in src.arrays:
        raise _invalid("embeddings", "Field required")
    return src
