"""The job's report: one self-contained HTML page a person reads (`GET /v1/jobs/{id}/report`).

Self-contained means the page works as a saved file, offline, forever: CSS is inline, plots are
PNGs drawn with matplotlib's Agg backend and embedded as base64 data URIs, there is no JavaScript,
and the viewer's browser fetches nothing. A Content-Security-Policy meta tag enforces that (images
only from ``data:``, no scripts, no styles or fonts from elsewhere). Images the caller's metadata
points at are shown inline only when they are ``data:image/...`` URIs; an http(s) image URL becomes a
link, so opening the report never contacts another host.

The page is rendered from Jinja2 templates (worker/templates/) with autoescaping on: everything
that came from a caller — ids, metadata, labels, the job's parameters — is escaped by the template
engine, never by hand.

Three modules: worker/report_view.py builds the view model (what every section and region shows,
as typed plain values, no HTML and no matplotlib), worker/report_plots.py draws the figures from it
and the arrays, and this one feeds both to the templates. The names other modules import stay here.

Every region is shown through its member set (spotlight/contract/members.py): its size, the members'
mean loss and lift, its overlap with the other regions, the plots that highlight it. A report is
always produced: where a plot cannot be drawn (no members, all losses equal, one row...) the page
says why instead; should rendering fail altogether, :func:`fallback_report` gives the numbers.

Layout: job header → summary of the regions (members, counted size, members' loss and lift,
overlap with earlier regions) → members in common between regions → an overview projection →
one card per region (numbers, composition, its projection and loss histogram, its top members).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from spotlight.contract.contribution import contributions, reference_loss
from spotlight.contract.params import Objective
from worker.report_plots import (
    MAX_PCA_FIT,
    MAX_POINTS,
    NoPlot,
    _top_components,
    loss_bins,
    region_plots,
    safe_projection,
    sample_rows,
)
from worker.report_view import (
    MEMBERS_SHOWN,
    PALETTE,
    ReportView,
    _int,
    _num,
    _pval,
    _short,
    image_link,
    image_src,
    member_rows,
    report_view,
)

__all__ = [
    "CSP",
    "MAX_PCA_FIT",
    "MAX_POINTS",
    "MEMBERS_SHOWN",
    "PALETTE",
    "NoPlot",
    "ReportView",
    "_pval",
    "_short",
    "_top_components",
    "fallback_report",
    "image_link",
    "image_src",
    "job_report",
    "loss_bins",
    "member_rows",
    "render_report",
    "render_view",
    "report_view",
]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


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
    ``order=contribution`` pages (weight x loss above the floor, spotlight/contract/contribution.py): its first
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
    member_sets : per region, its member rows (spotlight/contract/members.py).
    top_members : per region, its top rows (see :func:`member_rows`), highest contribution first.
    """
    emb = np.asarray(embeddings)
    if emb.ndim == 1:
        emb = emb[:, None]
    loss = np.asarray(losses, dtype=np.float64).ravel()
    n = loss.size
    sets = [np.asarray(m, dtype=np.int64) for m in member_sets]
    sets += [np.empty(0, dtype=np.int64)] * (len(regions) - len(sets))
    sample = sample_rows(sets, n, max_points, seed)
    proj, centers, proj_why = safe_projection(emb, sample, regions, seed)
    view = report_view(
        job,
        regions,
        descriptions,
        sets,
        top_members,
        n=n,
        d=emb.shape[1] if emb.ndim == 2 else 0,
        projection=(proj.method, len(sample)) if proj is not None else None,
    )
    overview, figures = region_plots(view, proj, proj_why, centers, sample, loss, sets)
    return render_view(view, overview, figures)


def render_view(
    view: ReportView,
    overview: Mapping[str, str] | None,
    figures: Sequence[Mapping[str, Mapping[str, str] | None]],
) -> str:
    """The page from its view model and its figures (``{"src": data URI}`` or ``{"why": ...}``)."""
    return (
        _templates()
        .get_template("report.html.j2")
        .render(
            title=view.title,
            facts=view.facts,
            params=view.params,
            summary=view.summary,
            verdict=view.verdict,
            weak_spot_found=view.weak_spot_found,
            params_level=view.params_level,
            dataset_mean=view.dataset_mean,
            overlap=view.overlap,
            overview=overview,
            projection_note=view.projection_note,
            regions=view.regions,
            figures=figures,
        )
    )


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
