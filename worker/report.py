"""The job's report: one self-contained HTML page a person reads (`GET /v1/jobs/{id}/report`).

Self-contained means the page works as a saved file, offline, forever: CSS is inline, plots are
PNGs drawn with matplotlib's Agg backend and embedded as base64 data URIs, there is no JavaScript,
and the viewer's browser fetches nothing. A Content-Security-Policy meta tag enforces that (images
only from ``data:``, no scripts, no styles or fonts from elsewhere). Images the caller's metadata
points at are shown inline only when they are ``data:image/...`` URIs; an http(s) image URL becomes a
link, so opening the report never contacts another host.

The page is rendered from Jinja2 templates (worker/templates/) with autoescaping on: everything
that came from a caller — ids, metadata, labels, the job's parameters — is escaped by the template
engine, never by hand. This module only prepares plain values (numbers formatted as text, plots
as data URIs, "why not" notes) for the templates.

Every region is shown through its member set (spotlight/members.py): its size, the members'
mean loss and lift, its overlap with the other regions, the plots that highlight it. A report is
always produced: where a plot cannot be drawn (no members, all losses equal, one row...) the page
says why instead; should rendering fail altogether, :func:`fallback_report` gives the numbers.

Layout: job header → summary of the regions (members, counted size, members' loss and lift,
overlap with earlier regions) → members in common between regions → an overview projection →
one card per region (numbers, composition, its projection and loss histogram, its top members).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from spotlight.contribution import contributions, reference_loss
from spotlight.members import overlap_matrix
from spotlight.params import Objective
from spotlight.protocol import parse_time

log = logging.getLogger("spotlight.worker.report")

MAX_POINTS = 4000  # points drawn in a projection (members of each region are always included)
MAX_PCA_FIT = 20000  # rows the PCA is fitted on
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
# Losses this skewed (the median in the lowest 5 % of the range, e.g. a classifier's cross-entropy,
# mostly near 0) are binned on a logarithmic axis, so the few high losses are not one flat bar.
_SKEW_FOR_LOG = 0.05

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class NoPlot(Exception):
    """A plot that cannot say anything for this data; the message says why, in the page."""


@lru_cache(maxsize=1)
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("worker", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["CSP"] = CSP
    return env


# ----- public entry points -----
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


def job_report(
    job: Mapping[str, Any],
    regions: Sequence[Mapping[str, Any]],
    descriptions: Sequence[Mapping[str, Any] | None],
    embeddings: np.ndarray,
    losses: np.ndarray,
    weights: np.ndarray,
    member_sets: Sequence[np.ndarray],
    members_by_contribution: Sequence[np.ndarray],
    *,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    read_ids: Callable[[np.ndarray], Sequence[Any] | None] | None = None,
    read_metadata: Callable[[np.ndarray], Sequence[Mapping[str, Any] | None] | None] | None = None,
    seed: int = 0,
    objective: Objective = "max_loss",
) -> str:
    """The report of a finished job, from the member sets the worker computed once.

    `members_by_contribution[k]` is region k's member set in the order the API's
    ``order=contribution`` pages (weight x loss above the floor, spotlight/contribution.py): its first
    rows are the failing examples of the weak spot, which is what a reader looks for. Their ids and
    metadata are read through the given readers (``DatasetFiles.ids`` / ``.metadata``).
    """
    W = np.asarray(weights)
    loss_v = np.asarray(losses, dtype=np.float64)
    reference = reference_loss(loss_v, objective)
    tops = []
    for k, ordered in enumerate(members_by_contribution):
        col = np.asarray(W[:, k], dtype=np.float64)
        idx = np.asarray(ordered, dtype=np.int64)[:MEMBERS_SHOWN]
        tops.append(
            member_rows(
                idx,
                col,
                losses,
                labels,
                predictions,
                read_ids(idx) if read_ids is not None else None,
                read_metadata(idx) if read_metadata is not None else None,
                contribution=contributions(col, loss_v, objective, reference),
            )
        )
    return render_report(job, regions, descriptions, embeddings, losses, W, member_sets, tops, seed=seed)


def render_report(
    job: Mapping[str, Any],
    regions: Sequence[Mapping[str, Any]],
    descriptions: Sequence[Mapping[str, Any] | None],
    embeddings: np.ndarray,
    losses: np.ndarray,
    weights: np.ndarray,
    member_sets: Sequence[np.ndarray],
    top_members: Sequence[Sequence[Mapping[str, Any]]],
    *,
    seed: int = 0,
    max_points: int = MAX_POINTS,
) -> str:
    """The report page as one HTML string.

    Parameters
    ----------
    job : mapping
        ``{"id", "dataset", "n", "dim", "params": {...}, "created_at", "started_at", "ended_at",
        "device", "elapsed_s"}``; any missing key is shown as "—".
    regions : the regions.json entries (index, weighted_loss, n_members, effective_size, overlap, ...).
    descriptions : one :func:`worker.describe.describe_region` dict per region (or None).
    embeddings : (n, d) array, may be memory-mapped (only a sample of rows is read).
    losses : (n,) array.   weights : (n, k) kernel values.
    member_sets : per region, its member rows (spotlight/members.py).
    top_members : per region, its top rows (see :func:`member_rows`), highest contribution first.
    """
    emb = np.asarray(embeddings)
    if emb.ndim == 1:
        emb = emb[:, None]
    loss = np.asarray(losses, dtype=np.float64).ravel()
    W = np.asarray(weights)
    if W.ndim == 1:
        W = W[:, None]
    n = loss.size
    sets = [np.asarray(m, dtype=np.int64) for m in member_sets]
    sets += [np.empty(0, dtype=np.int64)] * (len(regions) - len(sets))
    n_perm = (job.get("params") or {}).get("n_permutations")
    sample = _sample_rows(sets, n, max_points, seed)
    proj, centers, proj_why = _safe_projection(emb, sample, regions, seed)
    overview = None
    if regions:
        overview = _plot(partial(_overview_plot, proj, proj_why, centers, sample, sets, regions))
    cards = []
    for j, region in enumerate(regions):
        desc = _description(descriptions, j)
        rows = top_members[j] if j < len(top_members) else []
        colour = PALETTE[j % len(PALETTE)]
        member_mask = np.zeros(n, dtype=bool)
        member_mask[sets[j]] = True
        cards.append(
            {
                "index": region.get("index", j),
                "anchor": f"region-{j}",
                "colour": colour,
                "below_size": region.get("feasible") is False,
                "setup": _setup_line(region),
                "stats": _region_stats(region, desc, n_perm),
                "empty_why": _empty_reason(region) if sets[j].size == 0 else None,
                "projection": _plot(
                    partial(_region_projection, j, proj, proj_why, centers, sample, member_mask, colour)
                )
                if sets[j].size
                else None,
                "histogram": _plot(partial(_loss_histogram, loss, member_mask, region, desc, colour))
                if sets[j].size
                else None,
                "composition": _composition_blocks(desc),
                "numeric": _numeric_rows(desc),
                "text": _text_block(desc),
                "members": _members_table(rows),
            }
        )
    page = (
        _templates()
        .get_template("report.html.j2")
        .render(
            title=f"Spotlight report · {job.get('id', 'job')}",
            facts=_job_facts(job, n, emb.shape[1] if emb.ndim == 2 else 0),
            params=[(key, _short(value)) for key, value in sorted((job.get("params") or {}).items())],
            summary=_summary_rows(regions, descriptions, n_perm),
            verdict=str(job.get("verdict") or ""),
            weak_spot_found=any(r.get("significant") is True for r in regions),
            params_level=_pct((job.get("params") or {}).get("level", 0.05)),
            dataset_mean=_dataset_mean(regions, descriptions),
            overlap=_overlap_table(regions, sets),
            overview=overview,
            projection_note=(
                f"{proj.method} of the embeddings, {len(sample):,} of {n:,} rows shown; each region's "
                "members in its colour, their mean (where the region is) marked ×."
            )
            if proj is not None
            else "",
            regions=cards,
        )
    )
    return page


def fallback_report(job: Mapping[str, Any], regions: Sequence[Mapping[str, Any]], reason: str) -> str:
    """A plain page with the regions' numbers, for when the full report could not be rendered."""
    rows = [
        {
            "index": r.get("index", j),
            "n_members": _int(r.get("n_members")),
            "effective_size": _num(r.get("effective_size"), 1),
            "weighted_loss": _num(r.get("weighted_loss")),
            "lift": _num(r.get("lift"), 2),
        }
        for j, r in enumerate(regions)
    ]
    return (
        _templates()
        .get_template("fallback.html.j2")
        .render(
            title=f"Spotlight report · {job.get('id', 'job')}",
            job_id=str(job.get("id", "—")),
            reason=reason,
            rows=rows,
        )
    )


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


# ----- what the templates show -----
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
) -> list[dict[str, Any]]:
    rows = []
    for j, r in enumerate(regions):
        d = _description(descriptions, j)
        rows.append(
            {
                "index": r.get("index", j),
                "anchor": f"region-{j}",
                "colour": PALETTE[j % len(PALETTE)],
                "below_size": r.get("feasible") is False,
                "n_members": _int(r.get("n_members")),
                "effective_size": _num(r.get("effective_size", r.get("total_weight")), 1),
                "significant": r.get("significant") is True,
                "verdict": "significant" if r.get("significant") is True else "not distinguishable from noise",
                "n_holdout_members": _int(r.get("n_holdout_members")),
                "mean_loss": _num(r.get("mean_loss")),
                "ci": _ci(r.get("mean_loss_ci")),
                "lift": _times(r.get("lift")),
                "error_rate": _pct(r.get("error_rate")) if _is_num(r.get("error_rate")) else None,
                "weighted_loss": _num(r.get("weighted_loss")),
                "earlier": bool(r.get("overlap")),
                "overlap": [
                    (f"#{o.get('region')}", _pct(o.get("share")))
                    for o in (r.get("overlap") or [])
                    if isinstance(o, Mapping) and float(o.get("share") or 0) > 0
                ],
                "p_value": _pval(r.get("p_value")),
                "has_p_value": _is_num(r.get("p_value")),
                "permutation_p_value": _pval(r.get("permutation_p_value"), n_perm),
                "has_permutation_p_value": _is_num(r.get("permutation_p_value")),
                "headline": _headline(d),
                "medoid": r.get("medoid"),
            }
        )
    return rows


def _overlap_table(regions: Sequence[Mapping[str, Any]], sets: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """Share of each region's members (rows) that are also members of each other region (columns)."""
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
                {
                    "self": i == j,
                    "text": "—" if i == j else _pct(share),
                    "level": 0 if i == j else min(4, int(math.ceil(share * 4))),
                }
            )
        rows.append({"name": names[j], "colour": PALETTE[j % len(PALETTE)], "size": _int(sets[j].size), "cells": cells})
    return {"names": names, "rows": rows}


def _setup_line(region: Mapping[str, Any]) -> str:
    kernel = f"{region.get('kernel', '?')} kernel, {region.get('shape', '?')} shape"
    if region.get("steps_run") is None:
        return kernel
    conv = "converged" if region.get("converged") else "stopped at the step cap"
    return f"{kernel}; {_int(region.get('steps_run'))} steps, {conv}"


def _region_stats(region: Mapping[str, Any], desc: Mapping[str, Any], n_perm: Any) -> list[dict[str, Any]]:
    level = desc.get("ci_level", 0.95)
    stats: list[dict[str, Any]] = [
        {
            "label": "Members",
            "value": _int(region.get("n_members")),
            "title": "Rows a person calls the region: the flat kernel's support; for the gaussian, the heaviest "
            "rows that count as many examples as the region does.",
        },
        {
            "label": "Counts as (Σk)",
            "value": _num(region.get("effective_size", region.get("total_weight")), 1),
            "title": "Effective size: the sum of the kernel weights, how many examples the region counts.",
        },
        {
            "label": "Verdict",
            "value": "significant" if region.get("significant") is True else "not distinguishable from noise",
            "title": "Tested on held-out rows the search never saw: its kernel-weighted mean loss over them against "
            "the same with their losses permuted, corrected over the job's regions (Holm).",
        },
        {"label": "p-value (Holm)", "value": "", "pval": _pval(region.get("p_value"))},
        {
            "label": "Held-out members",
            "value": _int(region.get("n_holdout_members")),
            "title": "Members among the rows held out from the search: the figures below are theirs.",
        },
        {"label": "Held-out members' mean loss", "value": _num(region.get("mean_loss"))},
        {"label": f"{int(100 * float(level))}% interval", "value": _ci(region.get("mean_loss_ci"))},
        {
            "label": "Lift (held-out members ÷ held-out rows)",
            "value": _times(region.get("lift")),
            "title": f"Held-out rows' mean loss {_num(_holdout_mean(region))}.",
        },
        {
            "label": "In-sample lift (all members)",
            "value": _times(desc.get("in_sample_lift")),
            "title": "Measured on members the search chose: inflated by that choice.",
        },
        {
            "label": "Kernel-weighted loss (in-sample)",
            "value": _num(region.get("weighted_loss")),
            "title": "The search's objective on the rows it searched: Σ k·loss / Σ k.",
        },
        {"label": "Size requested", "value": _num(region.get("size_requested"), 1)},
        {
            "label": "A member to open",
            "value": f"row {_int(region.get('medoid'))}",
            "title": "The medoid: the member nearest the members' mean (the kernel's centre is a scoring "
            "parameter, not a place).",
        },
    ]
    if _is_num(region.get("permutation_p_value")):
        stats.append(
            {"label": "Permutation p-value", "value": "", "pval": _pval(region.get("permutation_p_value"), n_perm)}
        )
    err = desc.get("error_rate")
    if _is_num(region.get("error_rate")) and err:
        stats.append(
            {
                "label": "Error rate held-out members / all",
                "value": f"{_pct(region.get('error_rate'))} / {_pct(err.get('overall'))}",
            }
        )
    shared = [o for o in (region.get("overlap") or []) if isinstance(o, Mapping)]
    if shared:
        top = max(shared, key=lambda o: float(o.get("share") or 0))
        stats.append(
            {
                "label": "Most shared with",
                "value": f"#{top.get('region')}: {_pct(top.get('share'))}",
                "title": "Share of this region's members that an earlier region also holds.",
            }
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


def _composition_blocks(desc: Mapping[str, Any]) -> list[dict[str, Any]]:
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
                {
                    "value": _short(v.get("value")),
                    "bar_in": f"{100 * share_in:.1f}",
                    "bar_all": f"{100 * share_all:.1f}",
                    "share_in": _pct(share_in),
                    "share_all": _pct(share_all),
                    "lift": _times(v.get("lift")),
                    "count_in": _count(v.get("count_inside")),
                    "count_all": _count(v.get("count_overall")),
                    "precision": _pct(_unit(v.get("precision"))) if v.get("precision") is not None else "—",
                    "recall": _pct(_unit(v.get("recall"))) if v.get("recall") is not None else "—",
                }
            )
        blocks.append({"title": title, "rows": rows})
    return blocks


_LIFT_ON = {
    "heldout": ("held-out rows", "measured on rows the search did not use"),
    "non_members": (
        "rows outside the region",
        "measured on a sample of the rows outside the region: the search saw them (no held-out split in this job)",
    ),
}


def _text_block(desc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The region's over-represented terms with their checks, and a few member texts (None without texts)."""
    terms = desc.get("text_terms")
    if terms is None:
        return None
    lift_on, lift_title = _LIFT_ON.get(str(desc.get("text_terms_lift_on")), ("?", ""))
    return {
        "lift_on": lift_on,
        "lift_title": "mean loss of these rows mentioning the term / their mean loss, " + lift_title,
        "terms": [
            {
                "term": str(t.get("term")),
                "precision": _pct(_unit(t.get("precision"))),
                "recall": _pct(_unit(t.get("recall"))),
                "lift": _times(t.get("lift")) if t.get("lift") is not None else "—",
                "lift_rows": _count(t.get("lift_rows")),
            }
            for t in terms
        ],
        "examples": [str(t) for t in desc.get("text_examples") or []],
    }


def _numeric_rows(desc: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (str(f), _num(v.get("inside")), _num(v.get("overall")), _num(v.get("std_overall")))
        for f, v in (desc.get("numeric") or {}).items()
    ]


def _members_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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
            {
                "index": _int(r.get("index")),
                "id": _short(r.get("id"), 40) if r.get("id") is not None else "—",
                "contribution": _num(r.get("contribution"), 3),
                "weight": _num(r.get("weight"), 3),
                "loss": _num(r.get("loss")),
                "label": _short(r.get("label")),
                "prediction": _short(r.get("prediction")),
                "wrong": has_label and has_pred and r.get("label") != r.get("prediction"),
                "cells": [_cell(f, meta.get(f)) for f in fields],
            }
        )
    return {
        "fields": fields,
        "rows": out_rows,
        "has_label": has_label,
        "has_pred": has_pred,
        "has_contribution": has_contribution,
    }


def _cell(field: str, value: Any) -> dict[str, Any]:
    src = image_src(field, value)
    if src is not None:
        return {"kind": "img", "src": src, "alt": field}
    link = image_link(field, value)
    if link is not None:
        return {"kind": "link", "href": link, "text": _short(link, 48)}
    if value is None:
        return {"kind": "none"}
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > TEXT_CHARS:
        return {"kind": "text", "text": text[:TEXT_CHARS] + "…", "title": text[:2000]}
    return {"kind": "text", "text": text, "title": None}


def _headline(desc: Mapping[str, Any]) -> list[dict[str, str]]:
    """The one or two values that most set the region's members apart, for the summary table."""
    best: list[tuple[float, dict[str, str]]] = []
    sources = [("label", desc.get("labels")), ("prediction", desc.get("predictions"))]
    sources += [(f, c) for f, c in (desc.get("metadata") or {}).items()]
    for name, comp in sources:
        for v in (comp or {}).get("over_represented") or []:
            lift, share = float(v.get("lift") or 0), float(v.get("share_inside") or 0)
            if lift > 1.2 and share >= 0.2:
                best.append(
                    (
                        share * math.log(lift),
                        {
                            "name": str(name),
                            "value": _short(v.get("value"), 30),
                            "inside": _pct(share),
                            "overall": _pct(v.get("share_overall")),
                        },
                    )
                )
    best.sort(key=lambda t: -t[0])
    return [item for _, item in best[:2]]


# ----- plots -----
class _Projection:
    def __init__(self, xy: np.ndarray, method: str) -> None:
        self.xy = xy
        self.method = method


def _plot(draw: Callable[[], bytes]) -> dict[str, str]:
    """``{"src": data URI}`` of the plot, or ``{"why": ...}`` saying why there is none."""
    try:
        return {"src": "data:image/png;base64," + base64.b64encode(draw()).decode("ascii")}
    except NoPlot as reason:
        return {"why": str(reason)}
    except Exception as exc:  # noqa: BLE001 - a plot is a help; the page says what went wrong instead
        log.exception("a report plot failed")
        return {"why": f"This plot could not be drawn ({type(exc).__name__}: {exc})."}


def _sample_rows(sets: Sequence[np.ndarray], n: int, max_points: int, seed: int) -> np.ndarray:
    """Rows to draw: every region's heaviest members first (so they are always visible), then random rows."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    per_region = max(1, max_points // (3 * max(len(sets), 1)))
    chosen: set[int] = set()
    for members in sets:
        chosen.update(int(i) for i in np.asarray(members)[:per_region])
    extra = rng.choice(n, size=min(n, max_points), replace=False)
    for i in extra:
        if len(chosen) >= max_points:
            break
        chosen.add(int(i))
    return np.array(sorted(chosen), dtype=np.int64)


def _safe_projection(
    emb: np.ndarray, sample: np.ndarray, regions: Sequence[Mapping[str, Any]], seed: int
) -> tuple[_Projection | None, np.ndarray, str | None]:
    try:
        proj, centers = _project(emb, sample, regions, seed)
        return proj, centers, None
    except NoPlot as reason:
        return None, np.zeros((len(regions), 2)), str(reason)
    except Exception as exc:  # noqa: BLE001 - see _plot
        log.exception("the report's projection failed")
        return (
            None,
            np.zeros((len(regions), 2)),
            f"The embeddings could not be projected ({type(exc).__name__}: {exc}).",
        )


def _project(
    emb: np.ndarray, sample: np.ndarray, regions: Sequence[Mapping[str, Any]], seed: int
) -> tuple[_Projection, np.ndarray]:
    """2-D PCA (fitted on at most MAX_PCA_FIT rows) of the sampled rows and each region's place, its
    members' mean (`member_mean`; the kernel's centre is a scoring parameter that for a ball can lie
    far outside its members).

    PCA, not UMAP or t-SNE: it is linear, so the members' mean maps to the mean of their points
    exactly, and it costs one SVD of a sample (no extra dependency, seconds at most).
    One-dimensional embeddings are drawn as they are, along one axis.
    """
    n = emb.shape[0]
    d = emb.shape[1]
    if n == 0 or d == 0:
        raise NoPlot("The dataset has no rows or no dimensions to project.")
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, MAX_PCA_FIT), replace=False))
    X = np.nan_to_num(np.asarray(emb[fit_rows], dtype=np.float64).reshape(len(fit_rows), d))
    mu = X.mean(axis=0)
    method = "PCA (first two components)"
    if d == 1:
        comps, method = np.array([[1.0], [0.0]]), "The embeddings' one dimension"
    elif len(X) >= 2 and np.ptp(X, axis=0).max() > 0:
        comps = _top_components(X - mu, seed)
    else:
        comps, method = np.eye(2, d), "The first two dimensions (too few distinct rows for a PCA)"
    pts = (np.nan_to_num(np.asarray(emb[sample], dtype=np.float64).reshape(len(sample), d)) - mu) @ comps.T
    centers = np.full((len(regions), 2), np.nan)  # no members: no place to mark
    for j, r in enumerate(regions):
        place = r.get("member_mean")
        c = np.asarray(place if place is not None else np.full(d, np.nan), dtype=np.float64).ravel()
        if c.size == d and np.isfinite(c).all():
            centers[j] = (np.nan_to_num(c) - mu) @ comps.T
    return _Projection(pts, method), centers


def _top_components(Xc: np.ndarray, seed: int, k: int = 2, oversample: int = 8, power: int = 4) -> np.ndarray:
    """The top `k` principal directions (k x d) of centred rows, by a randomized range finder
    (Halko, Martinsson & Tropp, 2011): a few passes of X and X^T over a thin random block instead of a
    full SVD, so a 20 000 x 2 048 sample costs milliseconds rather than a minute. Exact for small d."""
    n, d = Xc.shape
    if d <= 64 or n <= 64:
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    else:
        q = np.random.default_rng(seed).normal(size=(d, min(d, k + oversample)))
        y, _ = np.linalg.qr(Xc @ q)
        for _ in range(power):  # power iterations sharpen the leading directions
            z, _ = np.linalg.qr(Xc.T @ y)
            y, _ = np.linalg.qr(Xc @ z)
        _, _, vt_small = np.linalg.svd(y.T @ Xc, full_matrices=False)
        vt = vt_small
    comps = vt[:k]
    return comps if comps.shape[0] == k else np.vstack([comps, np.zeros((k - comps.shape[0], d))])


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _style_axes(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=7, colors="#555")
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#bbb")


def _overview_plot(
    proj: _Projection | None,
    why: str | None,
    centers: np.ndarray,
    sample: np.ndarray,
    sets: Sequence[np.ndarray],
    regions: Sequence[Mapping[str, Any]],
) -> bytes:
    if proj is None:
        raise NoPlot(why or "The embeddings could not be projected.")
    from matplotlib.lines import Line2D

    fig = _figure(9.5, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    xy = proj.xy
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c="#c9ccd1", linewidths=0, rasterized=True)
    handles = []
    for j, region in enumerate(regions):
        colour = PALETTE[j % len(PALETTE)]
        m = np.isin(sample, sets[j])
        ax.scatter(xy[m, 0], xy[m, 1], s=10, c=colour, linewidths=0)
        ax.scatter(
            centers[j, 0], centers[j, 1], marker="X", s=110, c=colour, edgecolors="white", linewidths=1.2, zorder=5
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color=colour,
                label=f"region #{region.get('index', j)} ({sets[j].size:,} members)",
            )
        )
    _style_axes(ax)
    ax.set_xlabel("PC 1" if proj.method.startswith("PCA") else "axis 1", fontsize=8, color="#555")
    ax.set_ylabel("PC 2" if proj.method.startswith("PCA") else "axis 2", fontsize=8, color="#555")
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="best")
    _margins(fig, wide=True)
    return _png(fig)


def _region_projection(
    j: int,
    proj: _Projection | None,
    why: str | None,
    centers: np.ndarray,
    sample: np.ndarray,
    member_mask: np.ndarray,
    colour: str,
) -> bytes:
    if proj is None:
        raise NoPlot(why or "The embeddings could not be projected.")
    fig = _figure(4.6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    xy = proj.xy
    inside = member_mask[sample]
    ax.scatter(xy[~inside, 0], xy[~inside, 1], s=3, c="#d5d8dc", linewidths=0, rasterized=True)
    ax.scatter(xy[inside, 0], xy[inside, 1], s=9, c=colour, linewidths=0, rasterized=True)
    ax.scatter(centers[j, 0], centers[j, 1], marker="X", s=110, c=colour, edgecolors="black", linewidths=0.8, zorder=5)
    ax.set_title(f"members ({int(inside.sum()):,} drawn) in the projection", fontsize=8, color="#333")
    _style_axes(ax)
    _margins(fig)
    return _png(fig)


def loss_bins(loss: np.ndarray, n_bins: int = 40) -> tuple[np.ndarray, str]:
    """Bin edges for a loss histogram and the x-axis scale ('linear', 'log' or 'symlog').

    Most losses of a trained classifier sit near 0 with a long tail; on a linear axis they are one
    bar and the tail is invisible. When the median lies in the lowest ``_SKEW_FOR_LOG`` of the range,
    bins are logarithmic: 'log' when every loss is positive, else 'symlog' (linear up to a small
    positive loss, logarithmic above). Raises NoPlot when there is no spread to show.
    """
    finite = loss[np.isfinite(loss)]
    if finite.size == 0:
        raise NoPlot("No loss is a finite number, so there is no distribution to draw.")
    lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        raise NoPlot(f"All {finite.size:,} losses equal {_num(lo)}: there is no distribution to draw.")
    skewed = float(np.median(finite)) - lo < _SKEW_FOR_LOG * (hi - lo)
    if skewed and lo > 0:
        return np.geomspace(lo, hi, n_bins + 1), "log"
    positive = finite[finite > 0]
    if skewed and positive.size and hi > 0:
        thresh = max(float(np.quantile(positive, 0.05)), hi * 1e-6)
        if thresh < hi:
            below = np.linspace(lo, thresh, 4)
            return np.unique(np.concatenate([below, np.geomspace(thresh, hi, n_bins - 2)])), "symlog"
    return np.linspace(lo, hi, n_bins + 1), "linear"


def _loss_histogram(
    loss: np.ndarray, member_mask: np.ndarray, region: Mapping[str, Any], desc: Mapping[str, Any], colour: str
) -> bytes:
    if loss.size < 2:
        raise NoPlot(f"The dataset has {loss.size} row{'s' if loss.size != 1 else ''}: too few for a distribution.")
    bins, scale = loss_bins(loss)
    finite = np.isfinite(loss)
    inside, outside = loss[finite & member_mask], loss[finite & ~member_mask]
    fig = _figure(4.6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    # each group's bars sum to 1: the members (few) and the rest (many) are compared by shape
    if outside.size:
        ax.hist(
            outside,
            bins=bins,
            weights=np.full(outside.size, 1.0 / outside.size),
            histtype="stepfilled",
            color="#7f8c8d",
            alpha=0.35,
            label=f"other rows ({outside.size:,})",
        )
    if inside.size:
        ax.hist(
            inside,
            bins=bins,
            weights=np.full(inside.size, 1.0 / inside.size),
            histtype="stepfilled",
            color=colour,
            alpha=0.6,
            label=f"members ({inside.size:,})",
        )
    if scale == "log":
        ax.set_xscale("log")
    elif scale == "symlog":
        ax.set_xscale("symlog", linthresh=float(bins[3]) if bins.size > 3 and bins[3] > 0 else 1e-6)
    for value, style, name in (
        (desc.get("in_sample_mean_loss"), "-", "members' mean"),
        (desc.get("dataset_mean_loss", region.get("dataset_mean_loss")), "--", "dataset mean"),
    ):
        if isinstance(value, (int, float)) and math.isfinite(value) and (scale != "log" or value > 0):
            ax.axvline(float(value), color="#222", linestyle=style, linewidth=1, label=f"{name} {value:.3g}")
    ax.set_title(
        "loss: members vs other rows" + (" (log scale)" if scale != "linear" else ""), fontsize=8, color="#333"
    )
    ax.set_xlabel("loss", fontsize=8, color="#555")
    ax.set_ylabel("share of the group", fontsize=8, color="#555")
    ax.legend(fontsize=7, frameon=False)
    _style_axes(ax)
    _margins(fig)
    return _png(fig)


def _margins(fig: Any, wide: bool = False) -> None:
    """Fixed margins that fit the 8-point labels of these figure sizes. Why not `tight_layout`: it
    measures every tick label's text box and was a third of a small job's report time (the report
    is most of a 2 000-row job's wall time; docs/engine.md, speed)."""
    if wide:
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.96)
    else:
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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


def _pval(value: Any, n_permutations: Any = None) -> dict[str, str]:
    """The p-value as text, a class and a tooltip; at its floor 1/(N+1) it says so, since more
    shuffles could only make it smaller."""
    if not _is_num(value):
        return {"text": "—", "cls": "muted", "title": ""}
    n = int(n_permutations) if isinstance(n_permutations, int) and n_permutations > 0 else None
    if n is not None and value <= 1.0 / (n + 1) + 1e-12:
        return {
            "text": f"≤ {value:.2g}",
            "cls": "good",
            "title": f"No shuffled run out of {n} scored as high: the smallest p-value {n} runs can give.",
        }
    return {"text": f"{value:.3g}", "cls": "good" if value <= 0.05 else "warn", "title": ""}


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
    return parse_time(value)  # the one timestamp parser (spotlight/protocol.py)


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
