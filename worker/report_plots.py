"""The report's figures: matplotlib (Agg) PNGs of the view model's regions and the arrays.

Each figure is drawn from a :class:`worker.report_view.RegionFigures` (colour, legend, the loss
lines) and the arrays it needs; a figure that cannot say anything for the data raises
:class:`NoPlot`, and :func:`plot` turns that (or any failure) into the sentence the page shows
instead, so a report is always produced. The projection is a 2-D PCA of a sample of rows.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from worker.report_view import RegionFigures, ReportView, _num

log = logging.getLogger("spotlight.worker.report")

MAX_POINTS = 4000  # points drawn in a projection (members of each region are always included)
MAX_PCA_FIT = 20000  # rows the PCA is fitted on
# Losses this skewed (the median in the lowest 5 % of the range, e.g. a classifier's cross-entropy,
# mostly near 0) are binned on a logarithmic axis, so the few high losses are not one flat bar.
_SKEW_FOR_LOG = 0.05


class NoPlot(Exception):
    """A plot that cannot say anything for this data; the message says why, in the page."""


class Projection:
    def __init__(self, xy: np.ndarray, method: str) -> None:
        self.xy = xy
        self.method = method


def plot(draw: Callable[[], bytes]) -> dict[str, str]:
    """``{"src": data URI}`` of the plot, or ``{"why": ...}`` saying why there is none."""
    try:
        return {"src": "data:image/png;base64," + base64.b64encode(draw()).decode("ascii")}
    except NoPlot as reason:
        return {"why": str(reason)}
    except Exception as exc:  # noqa: BLE001 - a plot is a help; the page says what went wrong instead
        log.exception("a report plot failed")
        return {"why": f"This plot could not be drawn ({type(exc).__name__}: {exc})."}


def sample_rows(sets: Sequence[np.ndarray], n: int, max_points: int, seed: int) -> np.ndarray:
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


def safe_projection(
    emb: np.ndarray, sample: np.ndarray, regions: Sequence[Mapping[str, Any]], seed: int
) -> tuple[Projection | None, np.ndarray, str | None]:
    try:
        proj, centers = _project(emb, sample, regions, seed)
        return proj, centers, None
    except NoPlot as reason:
        return None, np.zeros((len(regions), 2)), str(reason)
    except Exception as exc:  # noqa: BLE001 - see plot
        log.exception("the report's projection failed")
        return (
            None,
            np.zeros((len(regions), 2)),
            f"The embeddings could not be projected ({type(exc).__name__}: {exc}).",
        )


def _project(
    emb: np.ndarray, sample: np.ndarray, regions: Sequence[Mapping[str, Any]], seed: int
) -> tuple[Projection, np.ndarray]:
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
    return Projection(pts, method), centers


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
    proj: Projection | None,
    why: str | None,
    centers: np.ndarray,
    sample: np.ndarray,
    sets: Sequence[np.ndarray],
    regions: Sequence[RegionFigures],
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
        colour = region.colour
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
                label=region.legend,
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
    proj: Projection | None,
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


def _loss_histogram(loss: np.ndarray, member_mask: np.ndarray, region: RegionFigures) -> bytes:
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
            color=region.colour,
            alpha=0.6,
            label=f"members ({inside.size:,})",
        )
    if scale == "log":
        ax.set_xscale("log")
    elif scale == "symlog":
        ax.set_xscale("symlog", linthresh=float(bins[3]) if bins.size > 3 and bins[3] > 0 else 1e-6)
    for value, style, name in (
        (region.members_mean_loss, "-", "members' mean"),
        (region.dataset_mean_loss, "--", "dataset mean"),
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


def region_plots(
    view: ReportView,
    proj: Projection | None,
    why: str | None,
    centers: np.ndarray,
    sample: np.ndarray,
    loss: np.ndarray,
    sets: Sequence[np.ndarray],
) -> tuple[dict[str, str] | None, list[dict[str, dict[str, str] | None]]]:
    """The overview plot (None without regions) and each region's projection and loss histogram
    (None for a region without members: its card says why instead)."""
    figures = [card.figures for card in view.regions]
    overview = plot(partial(_overview_plot, proj, why, centers, sample, sets, figures)) if figures else None
    per_region: list[dict[str, dict[str, str] | None]] = []
    for j, fig in enumerate(figures):
        if not fig.has_members:
            per_region.append({"projection": None, "histogram": None})
            continue
        member_mask = np.zeros(loss.size, dtype=bool)
        member_mask[sets[j]] = True
        per_region.append(
            {
                "projection": plot(partial(_region_projection, j, proj, why, centers, sample, member_mask, fig.colour)),
                "histogram": plot(partial(_loss_histogram, loss, member_mask, fig)),
            }
        )
    return overview, per_region
