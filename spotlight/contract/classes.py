"""Class names: text labels and predictions stored as integer codes plus one list of names.

Labels and predictions share one vocabulary, so ``label == prediction`` (the error rate) still
compares codes. A dataset's manifest carries ``class_names`` when its labels or predictions
arrived as text (or as a Hugging Face ClassLabel with names); everything that shows a label to a
person (members pages, region descriptions, the report, the client's tables) shows the name.

numpy only: the API, the worker and the client all import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

MANIFEST_KEY = "class_names"


def vocabulary(text_values: Iterable[Iterable[str]], names: Sequence[str] | None = None) -> list[str]:
    """The classes: `names` (a ClassLabel's, in its order) then every other text value, sorted.

    Sorted, not first-seen, so the same data gives the same codes whatever its row order.
    """
    known = list(names or [])
    seen = set(known)
    extra: set[str] = set()
    for values in text_values:
        extra.update(str(v) for v in values)
    return known + sorted(extra - seen)


def encode(values: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Text values -> int64 codes into `classes` (every value must be in it)."""
    index = {name: i for i, name in enumerate(classes)}
    arr = np.asarray(values).ravel()
    uniques, inverse = np.unique(arr.astype(str), return_inverse=True)
    codes = np.asarray([index[str(u)] for u in uniques], dtype=np.int64)
    return codes[inverse] if arr.size else np.empty(0, dtype=np.int64)


def name_of(code: Any, classes: Sequence[str] | None) -> Any:
    """The class name of a code, or the code itself when there are no names (or it is out of range)."""
    if classes is None or code is None:
        return code
    try:
        i = int(code)
    except (TypeError, ValueError):
        return code
    return classes[i] if 0 <= i < len(classes) else code


def names_of(codes: np.ndarray | None, classes: Sequence[str] | None) -> np.ndarray | None:
    """An array of codes as an array of names (object dtype), unchanged without names."""
    if codes is None or not classes:
        return codes
    table = np.asarray(list(classes), dtype=object)
    arr = np.asarray(codes, dtype=np.int64)
    ok = (arr >= 0) & (arr < len(table))
    out = arr.astype(object)
    out[ok] = table[arr[ok]]
    return out


def name_description(description: Any, classes: Sequence[str] | None) -> Any:
    """A region's description with label/prediction values shown by name (a new dict; the input is kept)."""
    if not classes or not isinstance(description, dict):
        return description
    out = dict(description)
    for key in ("labels", "predictions"):
        comp = out.get(key)
        if not isinstance(comp, dict):
            continue
        comp = dict(comp)
        for part, items in comp.items():
            if isinstance(items, dict) and "value" in items:  # e.g. "dominant"
                comp[part] = {**items, "value": name_of(items.get("value"), classes)}
            elif isinstance(items, list):
                comp[part] = [
                    {**item, "value": name_of(item.get("value"), classes)} if isinstance(item, dict) else item
                    for item in items
                ]
        out[key] = comp
    return out
