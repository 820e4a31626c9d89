"""Labels and predictions as error-type evidence: the columns a search appends to the embeddings.

With `evidence_weight` > 0 and labels and/or predictions given, the engine searches the embeddings
with extra columns: a one-hot of each row's label and of its prediction (`evidence="labels_predictions"`),
of its label only (`"labels"`), or one indicator of label != prediction (`"mismatch"`). A region can
then be "rows labelled 8 that the model calls something else, near here" — a class or an error type
— which a ball in embedding space alone cannot be when the class is larger than the spotlight.

This module is the one place those columns are defined (numpy only): the engine builds them here
before standardised search (worker/engine/prepare.py), and spotlight/contract/kernel.py adds a region's
evidence term from them when scoring new rows, so both compute the same u.

A region found with evidence carries, besides its centre and precision in embedding space, an
``evidence`` object: ``{"kind", "weight", "n_labels", "n_predictions", "center", "precision"}``
(plus ``class_names`` when the job's labels were text: other rows' labels are then matched by name)
where ``center`` and ``precision`` are per evidence column in one-hot units (a label column's centre
is near 1 when the region is that class), and the region's scaled distance is
u(x, y, ŷ) = sum_j p_j (x_j - c_j)^2 + sum_e precision_e (column_e(y, ŷ) - center_e)^2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

EvidenceKind = Literal["labels_predictions", "labels", "mismatch"]
KINDS: tuple[str, ...] = ("labels_predictions", "labels", "mismatch")
# One column per class code 0..max: codes past this many columns (ids, not classes; or a 1 000-class
# model) would cost n x c memory and search time for a one-hot that no longer says "which class" to a
# person, so the search then uses no evidence (`usable`).
MAX_COLUMNS = 128


class EvidenceMissing(ValueError):
    """A region found with labels/predictions as evidence was asked to score rows without them."""


def needs(kind: str) -> tuple[bool, bool]:
    """(labels needed, predictions needed) for this kind of evidence."""
    if kind == "labels":
        return True, False
    if kind in ("labels_predictions", "mismatch"):
        return True, True
    raise ValueError(f"unknown evidence kind {kind!r}; expected one of {KINDS}")


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((codes.shape[0], width), dtype=np.float32)
    seen = (codes >= 0) & (codes < width)  # a class the search never saw: no column is 1
    out[np.flatnonzero(seen), codes[seen]] = 1.0
    return out


def columns(
    kind: str,
    labels: np.ndarray | None,
    predictions: np.ndarray | None,
    n_labels: int,
    n_predictions: int,
) -> np.ndarray:
    """The n x c evidence columns (0/1, float32) of rows with these integer labels/predictions."""
    need_labels, need_predictions = needs(kind)
    if (need_labels and labels is None) or (need_predictions and predictions is None):
        wanted = "labels and predictions" if need_labels and need_predictions else "labels"
        raise EvidenceMissing(f"evidence {kind!r} needs the rows' {wanted}")
    if kind == "mismatch":
        assert labels is not None and predictions is not None
        return (np.asarray(labels) != np.asarray(predictions)).astype(np.float32)[:, None]
    assert labels is not None
    blocks = [_one_hot(np.asarray(labels, dtype=np.int64), n_labels)]
    if kind == "labels_predictions":
        assert predictions is not None
        blocks.append(_one_hot(np.asarray(predictions, dtype=np.int64), n_predictions))
    return np.concatenate(blocks, axis=1)


def applies(kind: str, weight: float, has_labels: bool, has_predictions: bool) -> bool:
    """Whether a search appends evidence at all: `weight` > 0 and the job has what `kind` needs.
    (It then also needs `usable` widths, known only once the labels are read.)"""
    need_labels, need_predictions = needs(kind)
    return weight > 0 and (has_labels or not need_labels) and (has_predictions or not need_predictions)


def max_width(kind: str, weight: float, has_labels: bool, has_predictions: bool) -> int:
    """The most columns a search appends, known before its labels are read (for its cost estimate).

    0 when evidence does not apply; 1 for 'mismatch'; otherwise MAX_COLUMNS, since one column per
    class code is used only up to that many (`usable`) and the class count is known only to the
    worker, which reads the codes."""
    if not applies(kind, weight, has_labels, has_predictions):
        return 0
    return 1 if kind == "mismatch" else MAX_COLUMNS


def usable(n_labels: int, n_predictions: int) -> bool:
    """Whether evidence this wide is used (at most MAX_COLUMNS columns)."""
    return n_labels + n_predictions <= MAX_COLUMNS


def widths(kind: str, labels: np.ndarray | None, predictions: np.ndarray | None) -> tuple[int, int]:
    """(n_labels, n_predictions): one column per class value 0..max seen in the search's data."""
    n_labels = int(labels.max()) + 1 if labels is not None and labels.size else 0
    n_predictions = int(predictions.max()) + 1 if predictions is not None and predictions.size else 0
    if kind == "labels":
        n_predictions = 0
    return n_labels, n_predictions


def as_codes(values: Any, class_names: list[str] | None, name: str) -> np.ndarray:
    """Rows' labels or predictions as the codes of the search's columns.

    Integers are taken as those codes. Text is matched by name against the job's `class_names`
    (labels and predictions share one vocabulary, spotlight/contract/classes.py); a name the job never saw
    gets code -1 (no column set). Text for a job whose labels were integers is refused."""
    v = np.asarray(values).reshape(-1)
    if v.size == 0 or np.issubdtype(v.dtype, np.integer):
        return v.astype(np.int64)
    if np.issubdtype(v.dtype, np.floating) or v.dtype == bool:
        if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
            raise ValueError(f"{name} must be integer codes or class names")
        return v.astype(np.int64)
    if not class_names:
        raise EvidenceMissing(f"{name} are class names, but the job's were integer codes: give the codes")
    index = {str(c): i for i, c in enumerate(class_names)}
    return np.asarray([index.get(str(x), -1) for x in v], dtype=np.int64)


def term(evidence: Mapping[str, Any], labels: Any | None, predictions: Any | None, n: int) -> np.ndarray:
    """The region's evidence part of u for n rows: sum_e precision_e (column_e - center_e)^2.

    `labels` / `predictions`: integer codes as the job's dataset had them, or class names (matched
    against the job's `class_names`, stored in the region's evidence when the job had names)."""
    kind = str(evidence["kind"])
    names = evidence.get("class_names")
    lab = None if labels is None else as_codes(labels, names, "labels")
    pred = None if predictions is None else as_codes(predictions, names, "predictions")
    for name, v in (("labels", lab), ("predictions", pred)):
        if v is not None and v.shape[0] != n:
            raise ValueError(f"{name} must have {n} entries (one per row), got {v.shape[0]}")
    cols = columns(kind, lab, pred, int(evidence["n_labels"]), int(evidence["n_predictions"]))
    center = np.asarray(evidence["center"], dtype=np.float64).ravel()
    precision = np.asarray(evidence["precision"], dtype=np.float64).ravel()
    if center.size != cols.shape[1] or precision.size not in (1, cols.shape[1]):
        raise ValueError("the region's evidence centre/precision do not match its evidence columns")
    r = cols - center
    return (r * r * precision).sum(axis=1)
