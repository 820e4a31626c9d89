"""DataFrames in, DataFrames out: the client's bridge to pandas, pyarrow and Hugging Face `datasets`.

A table (a pandas DataFrame, a pyarrow Table, or a `datasets.Dataset`) is written client-side as
one Parquet file and uploaded as it is, with the caller's column names as a `columns` mapping:
the server's Parquet reader (service/ingest/parquet.py) then does the rest — aliases, text class
names, Hugging Face ClassLabel names and Image columns, NaN -> null, timestamps -> ISO strings.
Writing Parquet here keeps one ingestion path and sends compact, typed columns.

None of pandas, pyarrow or `datasets` is imported until a table of that kind is given: the client
installs and imports with numpy and httpx alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any

from spotlight.client import gate
from spotlight.contract import columns as colmap

SPOOL_BYTES = 64 * 1024 * 1024
_EMB_PREFIX = "emb_"


def kind_of(obj: Any) -> str | None:
    """'pandas', 'arrow' or 'hf' for a table the client can upload; None for anything else."""
    module = type(obj).__module__ or ""
    name = type(obj).__name__
    if module.startswith("pandas") and name == "DataFrame":
        return "pandas"
    if module.startswith("pyarrow") and name == "Table":
        return "arrow"
    if module.startswith("datasets") and name == "Dataset":
        return "hf"
    if module.startswith("datasets") and name in ("DatasetDict", "IterableDataset", "IterableDatasetDict"):
        raise TypeError(f"a {name} is not one table: pass one split (e.g. ds['test']) as a datasets.Dataset")
    return None


def _require(module: str, why: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{why} needs {module.split('.')[0]} (pip install {module.split('.')[0]})") from None


def column_names(table: Any, kind: str) -> list[str]:
    if kind == "pandas":
        return [str(c) for c in table.columns]
    return list(table.column_names)


def mapping_for(names: Sequence[str], given: Mapping[str, str | None]) -> dict[str, str]:
    """The explicit field -> column mapping, checked against the table before anything is uploaded.

    Raises ValueError (spotlight.contract.columns.ColumnError) listing the columns found when a named column is
    missing, two aliases of one field are present, or no embeddings can be found.
    """
    mapping = {f: c for f, c in given.items() if c is not None}
    for field, column in mapping.items():
        if not isinstance(column, str):
            raise TypeError(f"with a table, {field}= names a column (a string), not {type(column).__name__}")
    emb_cols = [c for c in names if c.startswith(_EMB_PREFIX) and c[len(_EMB_PREFIX) :].isdigit()]
    found = colmap.resolve([c for c in names if c not in emb_cols], mapping)
    if "embeddings" not in found and not emb_cols:
        raise colmap.ColumnError(colmap.missing_embeddings_message(names), columns=list(names))
    if "losses" not in found and not ("logits" in found and "labels" in found):
        raise colmap.ColumnError(
            'no losses: name the column with losses="<column>" (or give logits and labels); '
            f"found {', '.join(repr(n) for n in names[:30])}",
            columns=list(names),
        )
    return mapping


def _arrow_from_pandas(df: Any) -> Any:
    """pandas -> pyarrow, column by column, so one odd object column becomes text instead of failing."""
    pa = _require("pyarrow", "submitting a DataFrame")
    arrays, names = [], []
    for name in df.columns:
        col = df[name]
        try:
            arr = pa.array(col, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            first = next((v for v in col if v is not None), None)
            if hasattr(first, "__len__") and hasattr(first, "dtype"):  # a column of numpy arrays
                arr = pa.array([None if v is None else list(map(float, v)) for v in col], type=pa.list_(pa.float64()))
            else:
                arr = pa.array([None if v is None else str(v) for v in col], type=pa.string())
        arrays.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


@contextmanager
def parquet_file(table: Any, kind: str, keep: Sequence[str] | None = None) -> Iterator[IO[bytes]]:
    """The table as one Parquet file (in memory up to 64 MiB, then on disk), positioned at 0.

    `keep`: only these columns are sent (None: all of them).
    """
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as f:
        if kind == "hf":
            ds = table.select_columns(list(keep)) if keep is not None else table
            # `datasets` writes its features (ClassLabel names, Image types) into the schema metadata
            with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
                ds.to_parquet(tmp.name)
                tmp.seek(0)
                while block := tmp.read(1024 * 1024):
                    f.write(block)
        else:
            pq = _require("pyarrow.parquet", "submitting a table")
            arrow = _arrow_from_pandas(table) if kind == "pandas" else table
            if keep is not None:
                arrow = arrow.select(list(keep))
            pq.write_table(arrow, f)
        f.seek(0)
        yield f


# ----- results as DataFrames -----
def pandas() -> Any:
    return _require("pandas", "a DataFrame of results")


def stands_out(description: Any, limit: int = 3) -> str:
    """The most over-represented label, prediction and metadata values, e.g. 'label=cat (x4.1)'."""
    if not isinstance(description, dict):
        return ""
    fields: list[tuple[str, Any]] = [
        ("label", description.get("labels")),
        ("prediction", description.get("predictions")),
    ]
    fields += list((description.get("metadata") or {}).items())
    parts = []
    for name, comp in fields:
        top = ((comp or {}).get("over_represented") or [None])[0] if isinstance(comp, dict) else None
        if isinstance(top, dict) and isinstance(top.get("lift"), (int, float)) and top["lift"] > 1:
            parts.append(f"{name}={top['value']} (x{top['lift']:.2g})")
    return ", ".join(parts[:limit])


def text_terms(description: Any, limit: int = 3) -> str:
    """The over-represented words in the members' texts, each with its checks as a rule, e.g.
    '"penguin" P 92% R 80% x2.1' (precision, recall against the members, lift; "" without texts)."""
    if not isinstance(description, dict):
        return ""
    parts = []
    for t in (description.get("text_terms") or [])[:limit]:
        if not isinstance(t, dict):
            continue
        lift = t.get("lift")
        parts.append(
            f'"{t.get("term")}" P {100 * float(t.get("precision") or 0):.0f}% R {100 * float(t.get("recall") or 0):.0f}%'
            + (f" x{lift:.2g}" if isinstance(lift, (int, float)) else "")
        )
    return ", ".join(parts)


REGION_COLUMNS = (
    "index",
    "significant",
    "p_value",
    "mean_loss",
    "lift",
    "n_members",
    "n_holdout_members",
    "effective_size",
    "weighted_loss",
    "weighted_lift",
    "dataset_mean_loss",
    "total_weight",
    "size_requested",
    "feasible",
    "permutation_p_value",
)
NOISE = "not distinguishable from noise"


def verdict_word(region: Mapping[str, Any]) -> str:
    """'significant' or NOISE: the one word the table, the DataFrame and the report show."""
    return "significant" if region.get("significant") is True else NOISE


def region_rows(regions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per region (the region as JSON, spotlight/contract/records.py), numbers named as the gate
    names them (`spotlight/client/gate.py`): the verdict (`significant`, `p_value`, `verdict` in words),
    `mean_loss` and `lift` of the held-out members with their interval (`ci_low`, `ci_high`, of the
    mean loss), the held-out `error_rate`, then the search's in-sample `weighted_loss`/`weighted_lift`,
    the largest share an earlier region already holds, the dominant label and prediction, what stands
    out, the words over-represented in the members' texts with their checks (`text_terms`; lift
    measured on the rows `text_terms_lift_on` names), and the medoid row (a member to open)."""
    rows = []
    for r in regions:
        row: dict[str, Any] = {c: gate.region_value(r, c) for c in REGION_COLUMNS}
        for c in ("index", "n_members", "n_holdout_members"):
            row[c] = int(row[c]) if row[c] is not None else None
        for c in ("feasible", "significant"):
            row[c] = bool(row[c]) if row[c] is not None else None
        row["verdict"] = verdict_word(r)
        row["kernel"], row["shape"] = r.get("kernel"), r.get("shape")
        ci = r.get("mean_loss_ci")
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2
        row["ci_low"], row["ci_high"] = (ci[0], ci[1]) if ok and ci is not None else (None, None)
        row["error_rate"] = gate.region_value(r, "error_rate")
        raw = r.get("description")
        desc: dict[str, Any] = raw if isinstance(raw, dict) else {}
        shares = [o.get("share") for o in r.get("overlap") or [] if isinstance(o, dict)]
        row["max_overlap"] = max((s for s in shares if isinstance(s, (int, float))), default=None)
        for key, col in (("labels", "top_label"), ("predictions", "top_prediction")):
            comp = desc.get(key) if isinstance(desc.get(key), dict) else {}
            dominant = comp.get("dominant") if isinstance(comp, dict) else None
            row[col] = dominant.get("value") if isinstance(dominant, dict) else None
        row["stands_out"] = stands_out(desc)
        row["text_terms"] = text_terms(desc)
        row["text_terms_lift_on"] = desc.get("text_terms_lift_on")
        row["medoid"] = r.get("medoid")
        rows.append(row)
    return rows


def member_rows(members: Sequence[Mapping[str, Any]], region: int | None = None) -> list[dict[str, Any]]:
    """Members flattened: their fields (with the row's text when the dataset has texts), then each
    metadata key as a column (prefixed on a clash)."""
    base = ("index", "id", "weight", "loss", "contribution", "label", "prediction")
    rows = []
    for m in members:
        row: dict[str, Any] = {} if region is None else {"region": region}
        row.update({k: m.get(k) for k in base})
        if m.get("text") is not None:
            row["text"] = m["text"]
        for key, value in (m.get("metadata") or {}).items():
            row[f"metadata.{key}" if key in row else key] = value
        rows.append(row)
    return rows
