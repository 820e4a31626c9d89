"""Which column (or .npz key) holds which dataset field: the names people use, or an explicit mapping.

One rule, used by the API's ingestion (Parquet, .npz) and by the client (DataFrames, Arrow tables,
Hugging Face datasets) so both agree on what ``label`` or ``emb`` means:

- an explicit mapping ``{"embeddings": "emb", "labels": "target"}`` wins for the fields it names;
- any other field is found by its aliases (``embedding``/``embeddings``/``emb``, ``loss``/``losses``,
  ``label``/``labels``/``target``, ``pred``/``prediction``/``predictions``, ``id``/``ids``, ...);
- two aliases of one field present at once is an error, never a guess;
- every error lists the columns that were found.

Pure Python, no dependencies: the client imports it next to numpy and httpx only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from spotlight.contract.client_errors import SpotlightError

# The dataset fields a column can fill, each with the names accepted for it (canonical name first).
ALIASES: dict[str, tuple[str, ...]] = {
    "embeddings": ("embeddings", "embedding", "emb", "embeds", "features"),
    "losses": ("losses", "loss"),
    "logits": ("logits", "logit"),
    "labels": ("labels", "label", "target", "targets", "y"),
    "predictions": ("predictions", "prediction", "preds", "pred", "y_pred"),
    "sample_weights": ("sample_weights", "sample_weight"),
    "ids": ("ids", "id"),
    # The rows' text (a sentence, a caption): a region's description names its over-represented words.
    "texts": ("texts", "text", "sentence", "sentences"),
}
FIELDS: tuple[str, ...] = tuple(ALIASES)


class ColumnError(SpotlightError, ValueError):
    """A mapping or a set of columns that does not say unambiguously where each field is.

    ``details`` carries ``columns`` (what was found) and, where it applies, ``field`` and ``candidates``.
    A `SpotlightError` (code ``column_error``), so the client's callers catch it with the rest.
    """

    def __init__(self, message: str, **details: object) -> None:
        super().__init__("column_error", message, None, dict(details))


def _shown(names: Iterable[str], limit: int = 30) -> str:
    names = list(names)
    text = ", ".join(repr(n) for n in names[:limit])
    return text + (f" … ({len(names)} in all)" if len(names) > limit else "")


def check_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a field -> column mapping's shape (known fields, string names, no column used twice)."""
    if not mapping:
        return {}
    out: dict[str, str] = {}
    for field, column in mapping.items():
        if field not in ALIASES:
            raise ColumnError(
                f"columns: unknown field {field!r}; the fields are {', '.join(FIELDS)} (other columns become metadata)",
                field=field,
                allowed=list(FIELDS),
            )
        if not isinstance(column, str) or not column:
            raise ColumnError(f"columns: {field} must name a column (a non-empty string)", field=field)
        out[field] = column
    used = list(out.values())
    twice = sorted({c for c in used if used.count(c) > 1})
    if twice:
        raise ColumnError(f"columns: column(s) {_shown(twice)} mapped to more than one field", duplicated=twice)
    return out


def resolve(found: Iterable[str], mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """{field: column} for every field present among `found`, by `mapping` first, then by alias.

    Raises ColumnError when a mapped column is missing or when two aliases of one field are present.
    Columns not in the answer are the caller's metadata.
    """
    columns = list(found)
    present = set(columns)
    explicit = check_mapping(mapping)
    out: dict[str, str] = {}
    for field, column in explicit.items():
        if column not in present:
            raise ColumnError(
                f"columns: {field} is mapped to {column!r}, which is not there; found {_shown(columns)}",
                field=field,
                column=column,
                columns=columns[:200],
            )
        out[field] = column
    taken = set(out.values())
    for field, names in ALIASES.items():
        if field in out:
            continue
        hits = [n for n in names if n in present and n not in taken]
        if len(hits) > 1:
            raise ColumnError(
                f"columns {_shown(hits)} could each be the {field}; keep one, or say which with "
                f'columns={{"{field}": "<name>"}} (CLI: --column {field}=<name>)',
                field=field,
                candidates=hits,
                columns=columns[:200],
            )
        if hits:
            out[field] = hits[0]
    return out


def missing_embeddings_message(found: Iterable[str]) -> str:
    """The error for a table without embeddings: what is accepted, and what was there."""
    return (
        "no embeddings: name a list column "
        + " or ".join(repr(a) for a in ALIASES["embeddings"][:3])
        + ', use columns emb_0 … emb_{d-1}, or map one with columns={"embeddings": "<name>"} '
        "(CLI: --column embeddings=<name>); "
        f"found {_shown(found)}"
    )
