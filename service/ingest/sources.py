"""What an upload turns into before validation: arrays as .npy files on disk, ids, metadata rows.

Every input format (multipart .npz / .npy fields / .parquet, inline JSON, a reference) is first
reduced to a `Sources`, so validation and canonical storage exist once, in service/ingest/build.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import ErrorCode

# How deeply a metadata value may nest. Rows are echoed back as they came, so a few levels are
# plenty; without a bound, a deep value makes every recursive reader (json, pydantic) overflow.
MAX_JSON_DEPTH = 64


def loads(text: str | bytes) -> Any:
    """`json.loads`, with nesting too deep for the parser reported as the ValueError it is."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests more than `limit` arrays/objects deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


@dataclass
class JsonlRows:
    """Metadata rows in a JSON-lines file on disk (streamed, never loaded whole)."""

    path: str

    def __iter__(self) -> Iterator[Any]:
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield loads(line)
                except ValueError as exc:
                    raise InvalidInput(
                        ErrorCode.BAD_FILE, f"metadata: line {lineno} is not JSON ({exc})", {"line": lineno}
                    ) from None

    def count(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.strip())


@dataclass
class Sources:
    arrays: dict[str, str] = field(default_factory=dict)  # field -> path of a .npy
    ids: list[Any] | str | None = None  # a list, or the path of a .npy of strings/ints
    metadata: list[Any] | JsonlRows | None = None
    texts: list[Any] | str | JsonlRows | None = None  # strings, a .npy of strings, or a JSON-lines file of them
    origin: str = ""  # "npz", "parquet", "npy", "json", "uri" (for logs and the manifest)
    # Names of the label/prediction codes (spotlight/contract/classes.py): set when they arrived as text or as
    # a Hugging Face ClassLabel; text arrays still in `arrays` are encoded by build().
    class_names: list[str] | None = None
    columns: dict[str, str] | None = None  # the caller's field -> column/key mapping (spotlight/contract/columns.py)


def json_safe(value: Any) -> Any:
    """Make a metadata value JSON-able: NaN/inf -> None, bytes -> text, other objects -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return str(value)
