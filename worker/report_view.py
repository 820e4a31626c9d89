"""The report's view model: what each part of the page shows, as plain typed values.

Built from the stored results (regions.json records, descriptions, member sets, top-member rows)
with no matplotlib and no HTML, so what a reader is told (the verdict, which figures are the
held-out members', why a plot or a region is empty) is tested on values, not on markup. Text that
came from a caller (ids, metadata, labels, parameters) stays unescaped here: the templates' autoescaping
is the one place it is escaped (worker/report.py). The figures are drawn from this model and the
arrays by worker/report_plots.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from spotlight.contract.members import overlap_matrix
from spotlight.contract.protocol import parse_time

MEMBERS_SHOWN = 12
META_FIELDS_SHOWN = 6
TEXT_CHARS = 160
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22", "#7f7f7f"]
_IMAGE_EXT = re.compile(r"\.(png|jpe?g|gif|webp|bmp|svg|avif)$", re.IGNORECASE)
_IMAGE_FIELD = re.compile(r"(image|img|thumb|photo|picture|pic)", re.IGNORECASE)
_DATA_IMAGE = re.compile(
    r"^data:image/(png|jpeg|jpg|gif|webp|bmp|svg\+xml|avif)(;[a-z0-9=.+-]+)*,[A-Za-z0-9+/=%._~-]*$"
)
_MAX_DATA_URI = 256 * 1024
SIGNIFICANT = "significant"
NOISE = "not distinguishable from noise"


@dataclass(frozen=True)
class PValue:
    """A p-value as shown: its text, a class (good / warn / muted) and a tooltip."""

    text: str
    cls: str
    title: str = ""


@dataclass(frozen=True)
class Stat:
    """One fact of a region's card; `pval` set means the value is a p-value."""

    label: str
    value: str
    title: str = ""
    pval: PValue | None = None


@dataclass(frozen=True)
class Cell:
    """A metadata value of a member: an inline image, a link (never loaded), text, or nothing."""

    kind: str  # "img" | "link" | "text" | "none"
    src: str = ""
    alt: str = ""
    href: str = ""
    text: str = ""
    title: str | None = None


@dataclass(frozen=True)
class MemberRow:
    index: str
    id: str
    contribution: str
    weight: str
    loss: str
    label: str
    prediction: str
    wrong: bool
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class MembersTable:
    fields: tuple[str, ...]
    rows: tuple[MemberRow, ...]
    has_label: bool
    has_pred: bool
    has_contribution: bool


@dataclass(frozen=True)
class Headline:
    """A value that sets a region's members apart: its share among them and overall."""

    name: str
    value: str
    inside: str
    overall: str


@dataclass(frozen=True)
class CompositionRow:
    """An over-represented value of a label, prediction or metadata field."""

    value: str
    bar_in: str  # bar widths, percent
    bar_all: str
    share_in: str
    share_all: str
    lift: str
    count_in: str
    count_all: str
    precision: str
    recall: str


@dataclass(frozen=True)
class CompositionBlock:
    title: str
    rows: tuple[CompositionRow, ...]


@dataclass(frozen=True)
class TextTerm:
    term: str
    precision: str
    recall: str
    lift: str
    lift_rows: str


@dataclass(frozen=True)
class TextBlock:
    """The region's over-represented terms, where its lift was measured, and a few member texts."""

    lift_on: str
    lift_title: str
    terms: tuple[TextTerm, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True)
class OverlapCell:
    is_self: bool
    text: str
    level: int  # shade 0-4


@dataclass(frozen=True)
class OverlapRow:
    name: str
    colour: str
    size: str
    cells: tuple[OverlapCell, ...]


@dataclass(frozen=True)
class OverlapTable:
    """Share of each region's members (rows) that are also members of each other region (columns)."""

    names: tuple[str, ...]
    rows: tuple[OverlapRow, ...]


@dataclass(frozen=True)
class SummaryRow:
    """A region's line in the summary table."""

    index: Any
    anchor: str
    colour: str
    below_size: bool
    n_members: str
    effective_size: str
    significant: bool
    verdict: str
    n_holdout_members: str
    mean_loss: str
    ci: str
    lift: str
    error_rate: str | None
    weighted_loss: str
    earlier: bool
    overlap: tuple[tuple[str, str], ...]
    p_value: PValue
    has_p_value: bool
    permutation_p_value: PValue
    has_permutation_p_value: bool
    headline: tuple[Headline, ...]
    medoid: Any


@dataclass(frozen=True)
class RegionFigures:
    """What region j's figures draw besides the arrays: its colour, legend and the loss lines."""

    position: int
    colour: str
    legend: str
    has_members: bool
    members_mean_loss: Any  # the in-sample members' mean, a vertical line on the histogram
    dataset_mean_loss: Any


@dataclass(frozen=True)
class RegionView:
    """A region's card."""

    index: Any
    anchor: str
    colour: str
    below_size: bool
    setup: str
    stats: tuple[Stat, ...]
    empty_why: str | None
    composition: tuple[CompositionBlock, ...]
    numeric: tuple[tuple[str, str, str, str], ...]
    text: TextBlock | None
    members: MembersTable
    figures: RegionFigures


@dataclass(frozen=True)
class ReportView:
    """The whole page, top to bottom."""

    title: str
    facts: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, str], ...]
    summary: tuple[SummaryRow, ...]
    verdict: str
    weak_spot_found: bool
    params_level: str
    dataset_mean: str
    overlap: OverlapTable | None
    projection_note: str
    regions: tuple[RegionView, ...] = field(default=())


def report_view(
    job: Mapping[str, Any],
    regions: Sequence[Mapping[str, Any]],
    descriptions: Sequence[Mapping[str, Any] | None],
    member_sets: Sequence[np.ndarray],
    top_members: Sequence[Sequence[Mapping[str, Any]]],
    *,
    n: int,
    d: int,
    projection: tuple[str, int] | None = None,
) -> ReportView:
    """The page's view model. `member_sets` has one array per region; `projection` is the method
    and the number of rows drawn of the overview projection (None: it could not be drawn)."""
    sets = [np.asarray(m, dtype=np.int64) for m in member_sets]
    sets += [np.empty(0, dtype=np.int64)] * (len(regions) - len(sets))
    params = job.get("params") or {}
    n_perm = params.get("n_permutations")
    cards = []
    for j, region in enumerate(regions):
        desc = _description(descriptions, j)
        colour = PALETTE[j % len(PALETTE)]
        has_members = bool(sets[j].size)
        cards.append(
            RegionView(
                index=region.get("index", j),
                anchor=f"region-{j}",
                colour=colour,
                below_size=region.get("feasible") is False,
                setup=_setup_line(region),
                stats=tuple(_region_stats(region, desc, n_perm)),
                empty_why=None if has_members else _empty_reason(region),
                composition=tuple(_composition_blocks(desc)),
                numeric=tuple(_numeric_rows(desc)),
                text=_text_block(desc),
                members=_members_table(top_members[j] if j < len(top_members) else []),
                figures=RegionFigures(
                    position=j,
                    colour=colour,
                    legend=f"region #{region.get('index', j)} ({sets[j].size:,} members)",
                    has_members=has_members,
                    members_mean_loss=desc.get("in_sample_mean_loss"),
                    dataset_mean_loss=desc.get("dataset_mean_loss", region.get("dataset_mean_loss")),
                ),
            )
        )
    return ReportView(
        title=f"Spotlight report · {job.get('id', 'job')}",
        facts=tuple(_job_facts(job, n, d)),
        params=tuple((key, _short(value)) for key, value in sorted(params.items())),
        summary=tuple(_summary_rows(regions, descriptions, n_perm)),
        verdict=str(job.get("verdict") or ""),
        weak_spot_found=any(r.get("significant") is True for r in regions),
        params_level=_pct(params.get("level", 0.05)),
        dataset_mean=_dataset_mean(regions, descriptions),
        overlap=_overlap_table(regions, sets),
        projection_note=(
            f"{projection[0]} of the embeddings, {projection[1]:,} of {n:,} rows shown; each region's "
            "members in its colour, their mean (where the region is) marked ×."
        )
        if projection is not None
        else "",
        regions=tuple(cards),
    )


# ----- rows and values a caller gave -----
def member_rows(
    indices: Sequence[int] | np.ndarray,
    weights_k: np.ndarray,
    losses: np.ndarray,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    ids: Sequence[Any] | None = None,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
    contribution: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rows of the members table in the API's `Member` shape, for the given dataset rows.

    `weights_k`, `losses`, `labels`, `predictions`, `contribution` are whole-dataset arrays (indexed
    here); `ids` and `metadata` are aligned with `indices` (what DatasetFiles.ids(idx) / .metadata(idx) give).
    """
    idx = [int(i) for i in np.asarray(indices).ravel()]
    rows = []
    for j, i in enumerate(idx):
        rows.append(
            {
                "index": i,
                "id": ids[j] if ids is not None else None,
                "weight": float(weights_k[i]),
                "loss": float(losses[i]),
                "contribution": float(contribution[i]) if contribution is not None else None,
                "label": _class_value(labels, i),
                "prediction": _class_value(predictions, i),
                "metadata": _metadata_of(metadata, j),
            }
        )
    return rows


def _metadata_of(metadata: Sequence[Mapping[str, Any] | None] | None, j: int) -> dict[str, Any] | None:
    row = metadata[j] if metadata is not None else None
    return dict(row) if row is not None else None


def _class_value(values: np.ndarray | None, i: int) -> Any:
    """A label or prediction as shown: an int code, or its class name when the task passed names."""
    if values is None:
        return None
    v = values[i]
    return v.item() if isinstance(v, np.generic) else v


def image_src(field: str, value: Any) -> str | None:
    """The value as an inline image source: a ``data:image/...`` URI of bounded size, else None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v.startswith("data:") and len(v) <= _MAX_DATA_URI and _DATA_IMAGE.match(v):
        return v
    return None


def image_link(field: str, value: Any) -> str | None:
    """An http(s) URL that ends in an image extension or sits in a field named like an image
    (image, thumb, ...): shown as a link, never loaded by the page."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in v) or len(v) > 2048:
        return None
    try:
        parts = urlsplit(v)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if _IMAGE_EXT.search(parts.path) or _IMAGE_FIELD.search(field):
        return v
    return None


# ----- what the page shows -----
def _description(descriptions: Sequence[Mapping[str, Any] | None], j: int) -> Mapping[str, Any]:
    """Region j's description, or an empty one (describing may have failed; the page shows "—")."""
    found = descriptions[j] if j < len(descriptions) else None
    return found if found is not None else {}


def _job_facts(job: Mapping[str, Any], n: int, d: int) -> list[tuple[str, str]]:
    created, started, ended = (_dt(job.get(x)) for x in ("created_at", "started_at", "ended_at"))
    wait = _seconds(started - created) if created and started else "—"
    run = (
        _seconds(ended - started)
        if started and ended
        else (_seconds(job["elapsed_s"]) if isinstance(job.get("elapsed_s"), (int, float)) else "—")
    )
    rows, dims = job.get("n", n), job.get("dim", d)
    return [
        ("Job", str(job.get("id", "—"))),
        ("Status", str(job.get("status", "finished"))),
        ("Dataset", str(job.get("dataset", "—"))),
        ("Rows × dims", f"{_int(rows)} × {_int(dims)}"),
        ("Device", str(job.get("device") or "—")),
        ("Created", _fmt_dt(created)),
        ("Waited in queue", wait),
        ("Ran for", run),
    ]


def _dataset_mean(regions: Sequence[Mapping[str, Any]], descriptions: Sequence[Mapping[str, Any] | None]) -> str:
    for d in descriptions:
        if d and d.get("dataset_mean_loss") is not None:
            return _num(d.get("dataset_mean_loss"))
    return _num(regions[0].get("dataset_mean_loss")) if regions else "—"


def _holdout_mean(region: Mapping[str, Any]) -> Any:
    """The held-out rows' mean loss (the honest lift's denominator), when the region has a verdict."""
    v = region.get("verdict")
    return v.get("holdout_mean_loss") if isinstance(v, Mapping) else None


def _summary_rows(
    regions: Sequence[Mapping[str, Any]], descriptions: Sequence[Mapping[str, Any] | None], n_perm: Any
) -> list[SummaryRow]:
    rows = []
    for j, r in enumerate(regions):
        d = _description(descriptions, j)
        rows.append(
            SummaryRow(
                index=r.get("index", j),
                anchor=f"region-{j}",
                colour=PALETTE[j % len(PALETTE)],
                below_size=r.get("feasible") is False,
                n_members=_int(r.get("n_members")),
                effective_size=_num(r.get("effective_size", r.get("total_weight")), 1),
                significant=r.get("significant") is True,
                verdict=SIGNIFICANT if r.get("significant") is True else NOISE,
                n_holdout_members=_int(r.get("n_holdout_members")),
                mean_loss=_num(r.get("mean_loss")),
                ci=_ci(r.get("mean_loss_ci")),
                lift=_times(r.get("lift")),
                error_rate=_pct(r.get("error_rate")) if _is_num(r.get("error_rate")) else None,
                weighted_loss=_num(r.get("weighted_loss")),
                earlier=bool(r.get("overlap")),
                overlap=tuple(
                    (f"#{o.get('region')}", _pct(o.get("share")))
                    for o in (r.get("overlap") or [])
                    if isinstance(o, Mapping) and float(o.get("share") or 0) > 0
                ),
                p_value=_pval(r.get("p_value")),
                has_p_value=_is_num(r.get("p_value")),
                permutation_p_value=_pval(r.get("permutation_p_value"), n_perm),
                has_permutation_p_value=_is_num(r.get("permutation_p_value")),
                headline=tuple(_headline(d)),
                medoid=r.get("medoid"),
            )
        )
    return rows


def _overlap_table(regions: Sequence[Mapping[str, Any]], sets: Sequence[np.ndarray]) -> OverlapTable | None:
    k = len(regions)
    if k < 2:
        return None
    m = overlap_matrix(sets[:k])
    names = [f"#{r.get('index', j)}" for j, r in enumerate(regions)]
    rows = []
    for j in range(k):
        cells = []
        for i in range(k):
            share = float(m[j, i])
            cells.append(
                OverlapCell(
                    is_self=i == j,
                    text="—" if i == j else _pct(share),
                    level=0 if i == j else min(4, int(math.ceil(share * 4))),
                )
            )
        rows.append(OverlapRow(names[j], PALETTE[j % len(PALETTE)], _int(sets[j].size), tuple(cells)))
    return OverlapTable(tuple(names), tuple(rows))


def _setup_line(region: Mapping[str, Any]) -> str:
    kernel = f"{region.get('kernel', '?')} kernel, {region.get('shape', '?')} shape"
    if region.get("steps_run") is None:
        return kernel
    conv = "converged" if region.get("converged") else "stopped at the step cap"
    return f"{kernel}; {_int(region.get('steps_run'))} steps, {conv}"


def _region_stats(region: Mapping[str, Any], desc: Mapping[str, Any], n_perm: Any) -> list[Stat]:
    level = desc.get("ci_level", 0.95)
    stats = [
        Stat(
            "Members",
            _int(region.get("n_members")),
            "Rows a person calls the region: the flat kernel's support; for the gaussian, the heaviest "
            "rows that count as many examples as the region does.",
        ),
        Stat(
            "Counts as (Σk)",
            _num(region.get("effective_size", region.get("total_weight")), 1),
            "Effective size: the sum of the kernel weights, how many examples the region counts.",
        ),
        Stat(
            "Verdict",
            SIGNIFICANT if region.get("significant") is True else NOISE,
            "Tested on held-out rows the search never saw: its kernel-weighted mean loss over them against "
            "the same with their losses permuted, corrected over the job's regions (Holm).",
        ),
        Stat("p-value (Holm)", "", pval=_pval(region.get("p_value"))),
        Stat(
            "Held-out members",
            _int(region.get("n_holdout_members")),
            "Members among the rows held out from the search: the figures below are theirs.",
        ),
        Stat("Held-out members' mean loss", _num(region.get("mean_loss"))),
        Stat(f"{int(100 * float(level))}% interval", _ci(region.get("mean_loss_ci"))),
        Stat(
            "Lift (held-out members ÷ held-out rows)",
            _times(region.get("lift")),
            f"Held-out rows' mean loss {_num(_holdout_mean(region))}.",
        ),
        Stat(
            "In-sample lift (all members)",
            _times(desc.get("in_sample_lift")),
            "Measured on members the search chose: inflated by that choice.",
        ),
        Stat(
            "Kernel-weighted loss (in-sample)",
            _num(region.get("weighted_loss")),
            "The search's objective on the rows it searched: Σ k·loss / Σ k.",
        ),
        Stat("Size requested", _num(region.get("size_requested"), 1)),
        Stat(
            "A member to open",
            f"row {_int(region.get('medoid'))}",
            "The medoid: the member nearest the members' mean (the kernel's centre is a scoring "
            "parameter, not a place).",
        ),
    ]
    if _is_num(region.get("permutation_p_value")):
        stats.append(Stat("Permutation p-value", "", pval=_pval(region.get("permutation_p_value"), n_perm)))
    err = desc.get("error_rate")
    if _is_num(region.get("error_rate")) and err:
        stats.append(
            Stat(
                "Error rate held-out members / all",
                f"{_pct(region.get('error_rate'))} / {_pct(err.get('overall'))}",
            )
        )
    shared = [o for o in (region.get("overlap") or []) if isinstance(o, Mapping)]
    if shared:
        top = max(shared, key=lambda o: float(o.get("share") or 0))
        stats.append(
            Stat(
                "Most shared with",
                f"#{top.get('region')}: {_pct(top.get('share'))}",
                "Share of this region's members that an earlier region also holds.",
            )
        )
    return stats


def _empty_reason(region: Mapping[str, Any]) -> str:
    total = region.get("effective_size", region.get("total_weight"))
    return (
        "This region has no members: every row's kernel weight is 0"
        + (f" (its weights sum to {_num(total)})" if isinstance(total, (int, float)) else "")
        + ", for example because the requested size is so small that no row reaches it. There is nothing to "
        "highlight in a projection, no loss distribution of members and no member to list."
    )


def _composition_blocks(desc: Mapping[str, Any]) -> list[CompositionBlock]:
    blocks = []
    sources = [("Labels", desc.get("labels")), ("Predictions", desc.get("predictions"))]
    sources += [(f"metadata · {field}", comp) for field, comp in (desc.get("metadata") or {}).items()]
    for title, comp in sources:
        if not comp:
            continue
        rows = []
        for v in comp.get("over_represented") or []:
            share_in, share_all = _unit(v.get("share_inside")), _unit(v.get("share_overall"))
            rows.append(
                CompositionRow(
                    value=_short(v.get("value")),
                    bar_in=f"{100 * share_in:.1f}",
                    bar_all=f"{100 * share_all:.1f}",
                    share_in=_pct(share_in),
                    share_all=_pct(share_all),
                    lift=_times(v.get("lift")),
                    count_in=_count(v.get("count_inside")),
                    count_all=_count(v.get("count_overall")),
                    precision=_pct(_unit(v.get("precision"))) if v.get("precision") is not None else "—",
                    recall=_pct(_unit(v.get("recall"))) if v.get("recall") is not None else "—",
                )
            )
        blocks.append(CompositionBlock(title, tuple(rows)))
    return blocks


_LIFT_ON = {
    "heldout": ("held-out rows", "measured on rows the search did not use"),
    "non_members": (
        "rows outside the region",
        "measured on a sample of the rows outside the region: the search saw them (no held-out split in this job)",
    ),
}


def _text_block(desc: Mapping[str, Any]) -> TextBlock | None:
    """The region's over-represented terms with their checks, and a few member texts (None without texts)."""
    terms = desc.get("text_terms")
    if terms is None:
        return None
    lift_on, lift_title = _LIFT_ON.get(str(desc.get("text_terms_lift_on")), ("?", ""))
    return TextBlock(
        lift_on=lift_on,
        lift_title="mean loss of these rows mentioning the term / their mean loss, " + lift_title,
        terms=tuple(
            TextTerm(
                term=str(t.get("term")),
                precision=_pct(_unit(t.get("precision"))),
                recall=_pct(_unit(t.get("recall"))),
                lift=_times(t.get("lift")) if t.get("lift") is not None else "—",
                lift_rows=_count(t.get("lift_rows")),
            )
            for t in terms
        ),
        examples=tuple(str(t) for t in desc.get("text_examples") or []),
    )


def _numeric_rows(desc: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (str(f), _num(v.get("inside")), _num(v.get("overall")), _num(v.get("std_overall")))
        for f, v in (desc.get("numeric") or {}).items()
    ]


def _members_table(rows: Sequence[Mapping[str, Any]]) -> MembersTable:
    rows = list(rows)[:MEMBERS_SHOWN]
    fields: list[str] = []
    for r in rows:
        for key in r.get("metadata") or {}:
            if key not in fields and len(fields) < META_FIELDS_SHOWN:
                fields.append(str(key))
    has_label = any(r.get("label") is not None for r in rows)
    has_pred = any(r.get("prediction") is not None for r in rows)
    has_contribution = any(r.get("contribution") is not None for r in rows)
    out_rows = []
    for r in rows:
        meta = r.get("metadata") or {}
        out_rows.append(
            MemberRow(
                index=_int(r.get("index")),
                id=_short(r.get("id"), 40) if r.get("id") is not None else "—",
                contribution=_num(r.get("contribution"), 3),
                weight=_num(r.get("weight"), 3),
                loss=_num(r.get("loss")),
                label=_short(r.get("label")),
                prediction=_short(r.get("prediction")),
                wrong=has_label and has_pred and r.get("label") != r.get("prediction"),
                cells=tuple(_cell(f, meta.get(f)) for f in fields),
            )
        )
    return MembersTable(
        fields=tuple(fields),
        rows=tuple(out_rows),
        has_label=has_label,
        has_pred=has_pred,
        has_contribution=has_contribution,
    )


def _cell(field: str, value: Any) -> Cell:
    src = image_src(field, value)
    if src is not None:
        return Cell("img", src=src, alt=field)
    link = image_link(field, value)
    if link is not None:
        return Cell("link", href=link, text=_short(link, 48))
    if value is None:
        return Cell("none")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > TEXT_CHARS:
        return Cell("text", text=text[:TEXT_CHARS] + "…", title=text[:2000])
    return Cell("text", text=text)


def _headline(desc: Mapping[str, Any]) -> list[Headline]:
    """The one or two values that most set the region's members apart, for the summary table."""
    best: list[tuple[float, Headline]] = []
    sources = [("label", desc.get("labels")), ("prediction", desc.get("predictions"))]
    sources += [(f, c) for f, c in (desc.get("metadata") or {}).items()]
    for name, comp in sources:
        for v in (comp or {}).get("over_represented") or []:
            lift, share = float(v.get("lift") or 0), float(v.get("share_inside") or 0)
            if lift > 1.2 and share >= 0.2:
                best.append(
                    (
                        share * math.log(lift),
                        Headline(
                            name=str(name),
                            value=_short(v.get("value"), 30),
                            inside=_pct(share),
                            overall=_pct(v.get("share_overall")),
                        ),
                    )
                )
    best.sort(key=lambda t: -t[0])
    return [item for _, item in best[:2]]


# ----- formatting: plain text, escaped by the templates -----
def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, digits: int = 4) -> str:
    if not _is_num(value):
        return "—"
    if digits <= 2 or abs(value) >= 1000:
        return f"{value:,.{max(digits, 0) if abs(value) < 1000 else 1}f}"
    return f"{value:.{digits}g}"


def _int(value: Any) -> str:
    return f"{int(value):,}" if _is_num(value) else "—"


def _count(value: Any) -> str:
    if not _is_num(value):
        return "—"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if _is_num(value) else "—"


def _times(value: Any) -> str:
    return f"{_num(value, 2)}×" if _is_num(value) else "—"


def _unit(value: Any) -> float:
    return min(1.0, max(0.0, float(value))) if _is_num(value) else 0.0


def _pval(value: Any, n_permutations: Any = None) -> PValue:
    """The p-value as text, a class and a tooltip; at its floor 1/(N+1) it says so, since more
    shuffles could only make it smaller."""
    if not _is_num(value):
        return PValue("—", "muted")
    n = int(n_permutations) if isinstance(n_permutations, int) and n_permutations > 0 else None
    if n is not None and value <= 1.0 / (n + 1) + 1e-12:
        return PValue(
            f"≤ {value:.2g}",
            "good",
            f"No shuffled run out of {n} scored as high: the smallest p-value {n} runs can give.",
        )
    return PValue(f"{value:.3g}", "good" if value <= 0.05 else "warn")


def _ci(ci: Any) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "—"
    return f"{_num(ci[0])} – {_num(ci[1])}"


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, float) and math.isfinite(value) and float(np.float32(value)) == value:
        value = float(str(np.float32(value)))  # a float32 stored before describe wrote it short: 7.7, not 7.6999998…
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dt(value: Any) -> datetime | None:
    return parse_time(value)  # the one timestamp parser (spotlight/contract/protocol.py)


def _fmt_dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value else "—"


def _seconds(value: Any) -> str:
    s = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    if not math.isfinite(s):
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
