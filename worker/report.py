"""The job's report: one self-contained HTML page a person reads (`GET /v1/jobs/{id}/report`).

Self-contained means the page works as a saved file, offline, forever: CSS is inline, plots are
PNGs drawn with matplotlib's Agg backend and embedded as base64 data URIs, and there is no
JavaScript at all. A Content-Security-Policy meta tag enforces that (no scripts, no styles or
fonts from elsewhere); the only things the page may fetch are the images the caller's own
metadata points at (http(s) image URLs and ``data:image/...`` URIs in the members table).

Everything that came from a caller — ids, metadata, labels, the job's parameters — is
HTML-escaped before it reaches the page; a URL becomes an ``<img>`` only when it is http(s) or a
``data:image/`` URI, so a ``javascript:`` value is shown as text.

Layout: job header (dataset, timing, device, parameters) → a summary table of the regions → an
overview projection → one card per region (numbers, loss interval, composition, its projection
and loss distribution, its top members).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from spotlight.contribution import contributions, order_by_contribution, reference_loss
from spotlight.params import Objective

MAX_POINTS = 4000  # points drawn in a projection (members of each region are always included)
MAX_PCA_FIT = 20000  # rows the PCA is fitted on
MEMBERS_SHOWN = 12
META_FIELDS_SHOWN = 6
TEXT_CHARS = 160
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22", "#7f7f7f"]
_IMAGE_EXT = re.compile(r"\.(png|jpe?g|gif|webp|bmp|svg|avif)$", re.IGNORECASE)
_IMAGE_FIELD = re.compile(r"(image|img|thumb|photo|picture|pic)", re.IGNORECASE)
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp|bmp|svg\+xml|avif)(;[a-z0-9=.+-]+)*,[A-Za-z0-9+/=%._~-]*$")
_MAX_DATA_URI = 256 * 1024

CSP = "default-src 'none'; img-src data: http: https:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def e(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


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
        rows.append({
            "index": i,
            "id": ids[j] if ids is not None else None,
            "weight": float(weights_k[i]),
            "loss": float(losses[i]),
            "contribution": float(contribution[i]) if contribution is not None else None,
            "label": _class_value(labels, i),
            "prediction": _class_value(predictions, i),
            "metadata": dict(metadata[j]) if metadata is not None and metadata[j] is not None else None,
        })
    return rows


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
    *,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    read_ids: Callable[[np.ndarray], Sequence[Any] | None] | None = None,
    read_metadata: Callable[[np.ndarray], Sequence[Mapping[str, Any] | None] | None] | None = None,
    seed: int = 0,
    member_min_weight: float = 0.0,
    objective: Objective = "max_loss",
) -> str:
    """The report of a finished job: picks each region's top members, reads their ids and metadata
    through the given readers (``DatasetFiles.ids`` / ``.metadata``), and renders the page.

    Top members are those with weight >= `member_min_weight` (and > 0) with the highest contribution,
    weight x (loss - the floor) (spotlight/contribution.py): the failing examples of the weak spot,
    which is what a reader of the report looks for, rather than the easy examples at its centre.
    """
    W = np.asarray(weights)
    loss_v = np.asarray(losses, dtype=np.float64)
    reference = reference_loss(loss_v, objective)
    members = []
    for k in range(W.shape[1] if W.ndim == 2 else 0):
        col = np.asarray(W[:, k], dtype=np.float64)
        inside = np.flatnonzero((col >= member_min_weight) & (col > 0))
        contrib = contributions(col, loss_v, objective, reference)
        idx = order_by_contribution(inside, col, loss_v, objective, reference)[:MEMBERS_SHOWN]
        members.append(member_rows(
            idx, col, losses, labels, predictions,
            read_ids(idx) if read_ids is not None else None,
            read_metadata(idx) if read_metadata is not None else None,
            contribution=contrib,
        ))
    return render_report(job, regions, descriptions, embeddings, losses, W, members, seed=seed)


def render_report(
    job: Mapping[str, Any],
    regions: Sequence[Mapping[str, Any]],
    descriptions: Sequence[Mapping[str, Any] | None],
    embeddings: np.ndarray,
    losses: np.ndarray,
    weights: np.ndarray,
    members: Sequence[Sequence[Mapping[str, Any]]],
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
    regions : the regions.json entries (index, weighted_loss, mean_loss, lift, total_weight, ...).
    descriptions : one :func:`worker.describe.describe_region` dict per region (or None).
    embeddings : (n, d) array, may be memory-mapped (only a sample of rows is read).
    losses : (n,) array.   weights : (n, k) kernel values.
    members : per region, its top rows (see :func:`member_rows`), highest contribution first.
    """
    emb = np.asarray(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
    loss = np.asarray(losses, dtype=np.float64).ravel()
    W = np.asarray(weights)
    if W.ndim == 1:
        W = W[:, None]
    n = loss.size
    k = len(regions)
    sample = _sample_rows(W, n, max_points, seed)
    proj, centers = _project(emb, sample, regions, seed)
    n_perm = (job.get("params") or {}).get("n_permutations")
    parts = [
        _head(job),
        _job_header(job, n, emb.shape[1] if emb.ndim == 2 else 0),
        _summary_table(regions, descriptions, n_perm),
    ]
    if k:
        parts.append('<section class="card"><h2>Where the regions are</h2>'
                     f'<p class="muted">{e(proj.method)} of the embeddings, {len(sample):,} of {n:,} rows shown; '
                     'each region\'s members in its colour (darker = higher kernel weight), its centre marked ×.</p>'
                     f'{_img(_overview_plot(proj, centers, W[sample], regions))}</section>')
    for j, region in enumerate(regions):
        desc = descriptions[j] if j < len(descriptions) else None
        rows = members[j] if j < len(members) else []
        parts.append(_region_card(j, region, desc, rows, proj, centers, W, sample, loss, n_perm))
    parts.append('<footer class="muted">Spotlight service · the spotlight method of d\'Eon et al., FAccT 2022 · '
                 'kernel weight k(x) is 1 at a region\'s centre and falls off with distance.</footer></main></body></html>')
    return "\n".join(parts)


# ----- page pieces -----
def _head(job: Mapping[str, Any]) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Spotlight report · {e(job.get("id", "job"))}</title>
<style>{_CSS}</style></head><body><main>"""


def _job_header(job: Mapping[str, Any], n: int, d: int) -> str:
    params = job.get("params") or {}
    created, started, ended = (_dt(job.get(x)) for x in ("created_at", "started_at", "ended_at"))
    wait = _seconds(started - created) if created and started else "—"
    run = _seconds(ended - started) if started and ended else (
        _seconds(job["elapsed_s"]) if isinstance(job.get("elapsed_s"), (int, float)) else "—")
    facts = [
        ("Job", job.get("id", "—")), ("Status", job.get("status", "finished")),
        ("Dataset", job.get("dataset", "—")), ("Rows × dims", f"{job.get('n', n):,} × {job.get('dim', d):,}"),
        ("Device", job.get("device") or "—"), ("Created", _fmt_dt(created)),
        ("Waited in queue", wait), ("Ran for", run),
    ]
    fact_html = "".join(f"<div><dt>{e(a)}</dt><dd>{e(b)}</dd></div>" for a, b in facts)
    param_html = "".join(
        f"<span class=\"chip\"><b>{e(key)}</b> {e(_short(value))}</span>" for key, value in sorted(params.items())
    )
    return (f'<header><h1>Spotlight report</h1><p class="lede">High-loss regions of the model\'s embedding space: '
            'where it does worst, who is there, and how sure we are.</p>'
            f'<dl class="facts">{fact_html}</dl><div class="chips">{param_html}</div></header>')


def _summary_table(
    regions: Sequence[Mapping[str, Any]], descriptions: Sequence[Mapping[str, Any] | None], n_perm: Any = None
) -> str:
    if not regions:
        return '<section class="card"><h2>No regions</h2><p>The search returned no regions.</p></section>'
    head = ("<tr><th>Region</th><th>Weighted loss</th><th>95% interval</th><th>Lift</th><th>Size (Σk)</th>"
            "<th>Members</th><th>p-value</th><th>Most over-represented</th></tr>")
    body = []
    for j, r in enumerate(regions):
        d = descriptions[j] if j < len(descriptions) and descriptions[j] else {}
        ci = d.get("weighted_loss_ci")
        body.append(
            f'<tr><td><span class="dot" style="background:{PALETTE[j % len(PALETTE)]}"></span>'
            f'<a href="#region-{j}">#{e(r.get("index", j))}</a>{_feasible_badge(r)}</td>'
            f'<td class="num">{_num(r.get("weighted_loss"))}</td>'
            f'<td class="num">{_ci(ci)}</td><td class="num"><b>{_num(r.get("lift"), 2)}×</b></td>'
            f'<td class="num">{_num(r.get("total_weight"), 1)}</td><td class="num">{_int(r.get("n_members"))}</td>'
            f'<td class="num">{_pval(r.get("p_value"), n_perm)}</td><td>{_headline(d)}</td></tr>'
        )
    mean = regions[0].get("mean_loss")
    return (f'<section class="card"><h2>Regions</h2><p class="muted">Dataset mean loss {_num(mean)}. '
            'Lift = weighted loss ÷ mean loss. The p-value is the share of searches on shuffled losses whose best '
            'region scored at least as high (blank when the job did not run the permutation test).</p>'
            f'<table class="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></section>')


def _region_card(
    j: int, region: Mapping[str, Any], desc: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
    proj: _Projection, centers: np.ndarray, W: np.ndarray, sample: np.ndarray, loss: np.ndarray, n_perm: Any = None,
) -> str:
    desc = desc or {}
    colour = PALETTE[j % len(PALETTE)]
    stats = [
        ("Weighted loss", _num(region.get("weighted_loss"))),
        (f"{int(100 * float(desc.get('ci_level', 0.95)))}% interval", _ci(desc.get("weighted_loss_ci"))),
        ("Dataset mean loss", _num(region.get("mean_loss"))),
        ("Lift", f"{_num(region.get('lift'), 2)}×"),
        ("Size Σk / requested", f"{_num(region.get('total_weight'), 1)} / {_num(region.get('size_requested'), 1)}"),
        ("Effective size", _num(desc.get("effective_size"), 1)),
        ("Members (k ≥ threshold)", _int(region.get("n_members"))),
        ("p-value", _pval(region.get("p_value"), n_perm)),
    ]
    err = desc.get("error_rate")
    if err:
        stats.append(("Error rate inside / overall", f"{_pct(err.get('inside'))} / {_pct(err.get('overall'))}"))
    stat_html = "".join(f"<div><dt>{e(a)}</dt><dd>{b}</dd></div>" for a, b in stats)
    kernel = f"{region.get('kernel', '?')} kernel, {region.get('shape', '?')} shape"
    conv = "converged" if region.get("converged") else "stopped at the step cap"
    steps = f"{_int(region.get('steps_run'))} steps, {conv}" if region.get("steps_run") is not None else ""
    plots = _img(_region_plot(j, proj, centers, W[sample, j], W[:, j], loss, region, colour))
    return (
        f'<section class="card region" id="region-{j}" style="border-top-color:{colour}">'
        f'<h2><span class="dot" style="background:{colour}"></span>Region #{e(region.get("index", j))}'
        f'{_feasible_badge(region)}</h2><p class="muted">{e(kernel)}; {e(steps)}</p>'
        f'<dl class="facts">{stat_html}</dl>'
        f'<div class="plots">{plots}</div>'
        f'{_composition_html(desc)}'
        f'<h3>Top members <small class="muted">by contribution: weight × loss above the floor</small></h3>{_members_table(rows)}</section>'
    )


def _composition_html(desc: Mapping[str, Any]) -> str:
    blocks = []
    for title, comp in (("Labels", desc.get("labels")), ("Predictions", desc.get("predictions"))):
        if comp:
            blocks.append(_composition_block(title, comp))
    for field, comp in (desc.get("metadata") or {}).items():
        blocks.append(_composition_block(f"metadata · {field}", comp))
    numeric = desc.get("numeric") or {}
    if numeric:
        rows = "".join(
            f"<tr><td>{e(f)}</td><td class=\"num\">{_num(v.get('inside'))}</td><td class=\"num\">{_num(v.get('overall'))}</td>"
            f"<td class=\"num\">{_num(v.get('std_overall'))}</td></tr>" for f, v in numeric.items()
        )
        blocks.append('<div class="comp"><h4>Numeric metadata (weighted mean)</h4><table><thead><tr><th>field</th>'
                      f'<th>inside</th><th>overall</th><th>sd overall</th></tr></thead><tbody>{rows}</tbody></table></div>')
    if not blocks:
        return ""
    return f'<h3>Who is in it</h3><div class="comps">{"".join(blocks)}</div>'


def _composition_block(title: str, comp: Mapping[str, Any]) -> str:
    rows = []
    for v in comp.get("over_represented") or []:
        share_in, share_all = float(v.get("share_inside", 0)), float(v.get("share_overall", 0))
        rows.append(
            f'<tr><td class="val">{e(_short(v.get("value")))}</td>'
            f'<td><div class="bar"><span class="in" style="width:{100 * min(1.0, share_in):.1f}%"></span></div>'
            f'<div class="bar"><span class="all" style="width:{100 * min(1.0, share_all):.1f}%"></span></div></td>'
            f'<td class="num">{_pct(share_in)}<br><span class="muted">{_pct(share_all)}</span></td>'
            f'<td class="num"><b>{_num(v.get("lift"), 2)}×</b></td>'
            f'<td class="num">{_num(v.get("weighted_count"), 1)}<br><span class="muted">of {_int(v.get("count"))}</span></td></tr>'
        )
    return (f'<div class="comp"><h4>{e(title)}</h4><table><thead><tr><th>value</th><th>share</th>'
            f'<th>in / all</th><th>lift</th><th>Σk / n</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _members_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No members above the weight threshold.</p>'
    rows = list(rows)[:MEMBERS_SHOWN]
    fields: list[str] = []
    for r in rows:
        for key in r.get("metadata") or {}:
            if key not in fields and len(fields) < META_FIELDS_SHOWN:
                fields.append(key)
    has_label = any(r.get("label") is not None for r in rows)
    has_pred = any(r.get("prediction") is not None for r in rows)
    has_contribution = any(r.get("contribution") is not None for r in rows)
    head = "<th>#</th><th>id</th>" + ("<th>contribution</th>" if has_contribution else "") + "<th>weight</th><th>loss</th>"
    head += ("<th>label</th>" if has_label else "") + ("<th>prediction</th>" if has_pred else "")
    head += "".join(f"<th>{e(f)}</th>" for f in fields)
    body = []
    for r in rows:
        wrong = has_label and has_pred and r.get("label") != r.get("prediction")
        cells = [f'<td class="num">{_int(r.get("index"))}</td>', f"<td>{e(_short(r.get('id'), 40))}</td>"]
        if has_contribution:
            cells.append(f'<td class="num">{_num(r.get("contribution"), 3)}</td>')
        cells += [f'<td class="num">{_num(r.get("weight"), 3)}</td>', f'<td class="num">{_num(r.get("loss"))}</td>']
        if has_label:
            cells.append(f'<td class="num">{e(_short(r.get("label")))}</td>')
        if has_pred:
            cells.append(f'<td class="num{" wrong" if wrong else ""}">{e(_short(r.get("prediction")))}</td>')
        meta = r.get("metadata") or {}
        cells.extend(f"<td>{_cell(f, meta.get(f))}</td>" for f in fields)
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="members"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def image_src(field: str, value: Any) -> str | None:
    """The value as a safe <img> source, or None: a ``data:image/...`` URI (bounded size) or an http(s)
    URL that ends in an image extension or sits in a field named like an image (image, thumb, ...)."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v.startswith("data:"):
        return v if len(v) <= _MAX_DATA_URI and _DATA_IMAGE.match(v) else None
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


def _cell(field: str, value: Any) -> str:
    src = image_src(field, value)
    if src is not None:
        return f'<img class="thumb" src="{e(src)}" alt="{e(field)}" loading="lazy" referrerpolicy="no-referrer">'
    if value is None:
        return '<span class="muted">—</span>'
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > TEXT_CHARS:
        return f'<span title="{e(text[:2000])}">{e(text[:TEXT_CHARS])}…</span>'
    return e(text)


# ----- plots -----
class _Projection:
    def __init__(self, xy: np.ndarray, method: str) -> None:
        self.xy = xy
        self.method = method


def _sample_rows(W: np.ndarray, n: int, max_points: int, seed: int) -> np.ndarray:
    """Rows to draw: every region's heaviest members first (so they are always visible), then random rows."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    k = W.shape[1]
    per_region = max(1, max_points // (3 * max(k, 1)))
    chosen = set()
    for j in range(k):
        col = np.asarray(W[:, j])
        top = np.argpartition(-col, min(per_region, n - 1))[:per_region]
        chosen.update(int(i) for i in top if col[i] > 0)
    rest = max_points - len(chosen)
    if rest > 0:
        extra = rng.choice(n, size=min(n, rest + len(chosen)), replace=False)
        for i in extra:
            if len(chosen) >= max_points:
                break
            chosen.add(int(i))
    return np.array(sorted(chosen), dtype=np.int64)


def _project(emb: np.ndarray, sample: np.ndarray, regions: Sequence[Mapping[str, Any]], seed: int
             ) -> tuple[_Projection, np.ndarray]:
    """2-D PCA (numpy SVD, fitted on at most MAX_PCA_FIT rows) of the sampled rows and the region centres.

    PCA, not UMAP or t-SNE: it is linear, so a region's centre maps to a point exactly and its
    members sit around it, and it costs one SVD of a sample (no extra dependency, seconds at most).
    """
    n = emb.shape[0]
    d = emb.shape[1] if emb.ndim == 2 else 1
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, MAX_PCA_FIT), replace=False)) if n else np.arange(0)
    X = np.asarray(emb[fit_rows], dtype=np.float64).reshape(len(fit_rows), d)
    mu = X.mean(axis=0) if len(X) else np.zeros(d)
    if len(X) >= 2 and d >= 2:
        _, _, vt = np.linalg.svd(X - mu, full_matrices=False)
        comps = vt[:2]
    else:
        comps = np.eye(2, d)
    if comps.shape[0] < 2:
        comps = np.vstack([comps, np.zeros((2 - comps.shape[0], d))])
    pts = (np.asarray(emb[sample], dtype=np.float64).reshape(len(sample), d) - mu) @ comps.T
    centers = np.array([(np.asarray(r.get("center", np.zeros(d)), dtype=np.float64) - mu) @ comps.T for r in regions]
                       ).reshape(len(regions), 2)
    return _Projection(pts, "PCA (first two components)"), centers


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


def _overview_plot(proj: _Projection, centers: np.ndarray, Ws: np.ndarray, regions: Sequence[Mapping[str, Any]]) -> bytes:
    fig = _figure(9.5, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    xy = proj.xy
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c="#c9ccd1", linewidths=0, rasterized=True)
    for j in range(Ws.shape[1]):
        colour = PALETTE[j % len(PALETTE)]
        w = np.clip(np.asarray(Ws[:, j], dtype=np.float64), 0, 1)
        m = w >= 0.05
        order = np.argsort(w[m])
        ax.scatter(xy[m, 0][order], xy[m, 1][order], s=6 + 22 * w[m][order], c=colour,
                   alpha=np.clip(0.15 + 0.85 * w[m][order], 0, 1), linewidths=0, label=f"region #{regions[j].get('index', j)}")
        ax.scatter(centers[j, 0], centers[j, 1], marker="X", s=110, c=colour, edgecolors="white", linewidths=1.2, zorder=5)
    _style_axes(ax)
    ax.set_xlabel("PC 1", fontsize=8, color="#555")
    ax.set_ylabel("PC 2", fontsize=8, color="#555")
    if Ws.shape[1]:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=PALETTE[j % len(PALETTE)],
                          label=f"region #{regions[j].get('index', j)}") for j in range(Ws.shape[1])]
        ax.legend(handles=handles, fontsize=8, frameon=False, loc="best")
    fig.tight_layout()
    return _png(fig)


def _region_plot(j: int, proj: _Projection, centers: np.ndarray, w_sample: np.ndarray, w_all: np.ndarray,
                 loss: np.ndarray, region: Mapping[str, Any], colour: str) -> bytes:
    fig = _figure(9.5, 3.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xy = proj.xy
    w = np.clip(np.asarray(w_sample, dtype=np.float64), 0, 1)
    ax1.scatter(xy[:, 0], xy[:, 1], s=3, c="#d5d8dc", linewidths=0, rasterized=True)
    m = w >= 0.01
    order = np.argsort(w[m])
    ax1.scatter(xy[m, 0][order], xy[m, 1][order], s=4 + 24 * w[m][order], c=colour,
                alpha=np.clip(0.1 + 0.9 * w[m][order], 0, 1), linewidths=0, rasterized=True)
    ax1.scatter(centers[j, 0], centers[j, 1], marker="X", s=110, c=colour, edgecolors="black", linewidths=0.8, zorder=5)
    ax1.set_title("members in the projection (size, opacity = weight)", fontsize=8, color="#333")
    _style_axes(ax1)
    # loss distribution: inside weighted by k, outside by 1 - k
    k = np.clip(np.asarray(w_all, dtype=np.float64).ravel(), 0, 1)
    finite = np.isfinite(loss)
    lo, hi = (float(np.min(loss[finite])), float(np.max(loss[finite]))) if finite.any() else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 41)
    kw = {"bins": bins, "histtype": "stepfilled", "density": True}
    if (k[finite] * 1).sum() > 0:
        ax2.hist(loss[finite], weights=k[finite], color=colour, alpha=0.55, label="inside (weight k)", **kw)
    if (1 - k[finite]).sum() > 0:
        ax2.hist(loss[finite], weights=1 - k[finite], color="#7f8c8d", alpha=0.35, label="outside (weight 1−k)", **kw)
    for value, style, name in ((region.get("weighted_loss"), "-", "weighted loss"), (region.get("mean_loss"), "--", "mean loss")):
        if isinstance(value, (int, float)) and math.isfinite(value):
            ax2.axvline(float(value), color="#222", linestyle=style, linewidth=1, label=f"{name} {value:.3g}")
    ax2.set_title("loss distribution, inside vs outside", fontsize=8, color="#333")
    ax2.set_xlabel("loss", fontsize=8, color="#555")
    ax2.legend(fontsize=7, frameon=False)
    _style_axes(ax2)
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _img(png: bytes) -> str:
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


# ----- formatting -----
def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    if digits <= 2 or abs(value) >= 1000:
        return e(f"{value:,.{max(digits, 0) if abs(value) < 1000 else 1}f}")
    return e(f"{value:.{digits}g}")


def _int(value: Any) -> str:
    return e(f"{int(value):,}") if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _pct(value: Any) -> str:
    return e(f"{100 * float(value):.1f}%") if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def _pval(value: Any, n_permutations: Any = None) -> str:
    """The p-value; at its floor 1/(N+1) it says so, since more shuffles could only make it smaller."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return '<span class="muted">—</span>'
    n = int(n_permutations) if isinstance(n_permutations, int) and n_permutations > 0 else None
    if n is not None and value <= 1.0 / (n + 1) + 1e-12:
        return (f'<span class="good" title="No shuffled run out of {n} scored as high: the smallest p-value '
                f'{n} runs can give.">≤ {e(f"{value:.2g}")}</span>')
    cls = "good" if value <= 0.05 else "warn"
    return f'<span class="{cls}">{e(f"{value:.3g}")}</span>'


def _ci(ci: Any) -> str:
    if not ci or len(ci) != 2:
        return "—"
    return f"{_num(ci[0])} – {_num(ci[1])}"


def _feasible_badge(region: Mapping[str, Any]) -> str:
    if region.get("feasible") is False:
        return ' <span class="badge" title="No iterate reached the requested size; this is the best smaller one.">below size</span>'
    return ""


def _headline(desc: Mapping[str, Any]) -> str:
    """The one or two values that most set the region apart, for the summary table."""
    best: list[tuple[float, str]] = []
    sources = [("label", desc.get("labels")), ("prediction", desc.get("predictions"))]
    sources += [(f, c) for f, c in (desc.get("metadata") or {}).items()]
    for name, comp in sources:
        for v in (comp or {}).get("over_represented") or []:
            if float(v.get("lift", 0)) > 1.2 and float(v.get("share_inside", 0)) >= 0.2:
                best.append((float(v.get("share_inside", 0)) * math.log(float(v["lift"])),
                             f"{e(name)} = <b>{e(_short(v.get('value'), 30))}</b> "
                             f"({_pct(v.get('share_inside'))} vs {_pct(v.get('share_overall'))})"))
    best.sort(key=lambda t: -t[0])
    return "<br>".join(text for _, text in best[:2]) or '<span class="muted">no stand-out value</span>'


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


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


_CSS = """
:root{--ink:#1d2330;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#d62728}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 20px 40px}
header{margin-bottom:18px}
h1{font-size:26px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:18px;margin:0 0 6px;display:flex;align-items:center;gap:8px}
h3{font-size:14px;margin:18px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
h4{font-size:13px;margin:0 0 6px}
.lede{color:var(--muted);margin:0 0 14px}
.muted{color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card.region{border-top:4px solid var(--accent)}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px 16px;margin:10px 0}
.facts div{background:var(--bg);border-radius:8px;padding:8px 10px}
.facts dt{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.facts dd{margin:2px 0 0;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{background:#eef2f7;border-radius:999px;padding:2px 10px;font-size:12px}
.chip b{font-weight:600;color:#374151}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.03em;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:6px 8px;vertical-align:middle}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.wrong{color:var(--accent);font-weight:600}
.summary a{color:inherit;font-weight:600;text-decoration:none}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:middle}
.badge{font-size:11px;background:#fff4e5;color:#92400e;border-radius:6px;padding:1px 6px;margin-left:6px}
.good{color:#15803d;font-weight:600}.warn{color:#b45309}
.plots img.plot,.card>img.plot{width:100%;height:auto;display:block}
.comps{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
.comp{border:1px solid var(--line);border-radius:8px;padding:10px}
.comp td.val{max-width:140px;overflow-wrap:anywhere}
.bar{height:6px;background:#f1f2f4;border-radius:3px;margin:2px 0;min-width:80px}
.bar span{display:block;height:100%;border-radius:3px}
.bar .in{background:var(--accent)}.bar .all{background:#9ca3af}
.scroll{overflow-x:auto}
table.members td{max-width:260px;overflow-wrap:anywhere}
img.thumb{max-width:72px;max-height:72px;border-radius:4px;display:block;background:#eee}
footer{font-size:12px;margin-top:24px;text-align:center}
"""
