"""The report's view model (worker/report_view.py): what the page says, tested on values, not markup."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tests.ux.example import planted_dataset, planted_regions, report_inputs
from worker.describe import describe_regions, metadata_columns
from worker.report import render_view
from worker.report_plots import region_plots
from worker.report_view import NOISE, SIGNIFICANT, ReportView, member_rows, report_view

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>{{ 7*7 }}'


def _view(data: dict[str, Any], regions: list[dict[str, Any]], weights: np.ndarray) -> ReportView:
    job, descriptions, sets, members = report_inputs(data, regions, weights, n_bootstrap=0)
    n, d = data["embeddings"].shape
    return report_view(job, regions, descriptions, sets, members, n=n, d=d, projection=("PCA", n))


@pytest.fixture(scope="module")
def planted() -> dict[str, Any]:
    data = planted_dataset(n=800, d=8)
    regions, weights = planted_regions(data)
    return {"data": data, "regions": regions, "weights": weights, "view": _view(data, regions, weights)}


def test_a_null_job_says_no_weak_spot_found_and_every_region_is_noise(planted: dict[str, Any]) -> None:
    data = dict(planted["data"])
    data["losses"] = np.random.default_rng(1).permutation(data["losses"])
    regions, weights = planted_regions(data)
    null = _view(data, regions, weights)
    assert not null.weak_spot_found and "No weak spot found" in null.verdict
    assert [row.verdict for row in null.summary] == [NOISE] * len(regions)
    assert [_stats(card)["Verdict"].value for card in null.regions] == [NOISE] * len(regions)
    found = planted["view"]
    assert found.weak_spot_found and "No weak spot found" not in found.verdict
    assert [row.verdict for row in found.summary] == [SIGNIFICANT] * len(planted["regions"])


def test_a_regions_held_out_figures_are_labelled_held_out(planted: dict[str, Any]) -> None:
    for region, card, row in zip(planted["regions"], planted["view"].regions, planted["view"].summary, strict=True):
        stats = _stats(card)
        assert stats["Held-out members"].value == f"{region['n_holdout_members']:,}" == row.n_holdout_members
        assert stats["Held-out members' mean loss"].value == f"{region['mean_loss']:.4g}" == row.mean_loss
        lift = stats["Lift (held-out members ÷ held-out rows)"]
        assert lift.value == f"{region['lift']:.2f}×" == row.lift
        assert f"{region['verdict']['holdout_mean_loss']:.4g}" in lift.title
        # the in-sample figures are the members the search chose, and say so
        assert "inflated" in stats["In-sample lift (all members)"].title
        assert stats["Kernel-weighted loss (in-sample)"].value == f"{region['weighted_loss']:.4g}"


def test_caller_text_is_plain_in_the_view_and_escaped_in_the_page() -> None:
    losses = np.array([1.0, 2.0, 3.0])
    w = np.array([[1.0], [0.5], [0.0]])
    region = {"index": 0, "kernel": "gaussian", "n_members": 2, "effective_size": 1.5, "overlap": []}
    members = np.array([0, 1])
    meta = [{"caption": HOSTILE}] * 3
    desc = describe_regions([members], losses, None, None, metadata_columns(meta), n_bootstrap=0)
    rows = member_rows(members, w[:, 0], losses, ids=[HOSTILE, "b"], metadata=meta[:2])
    job = {"id": f"job_{HOSTILE}", "params": {"seed": "<b>7</b>"}}
    view = report_view(job, [region], desc, [members], [rows], n=3, d=2)
    assert ("Job", f"job_{HOSTILE}") in view.facts and ("seed", "<b>7</b>") in view.params
    table = view.regions[0].members
    assert table.rows[0].id.startswith("<script>alert(1)</script>")
    assert table.fields == ("caption",) and table.rows[0].cells[0].text == HOSTILE
    # the page is rendered from the view alone, figures or not: the templates escape every field
    none = {"why": "not drawn here."}
    page = render_view(view, none, [{"projection": none, "histogram": none}])
    assert "<script>" not in page and "<b>7</b>" not in page and "{{ 7*7 }}" in page
    assert "job_&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


def test_a_region_without_members_says_why_and_gets_no_figure() -> None:
    losses = np.linspace(0, 1, 20)
    region = {"index": 0, "kernel": "gaussian", "effective_size": 0.0, "n_members": 0}
    view = report_view({"id": "job_x"}, [region], [None], [np.empty(0, dtype=np.int64)], [[]], n=20, d=3)
    card = view.regions[0]
    assert card.empty_why is not None and "no members" in card.empty_why
    assert not card.figures.has_members and card.members.rows == ()
    _, figures = region_plots(view, None, "no projection", np.zeros((1, 2)), np.arange(20), losses, [np.empty(0)])
    assert figures == [{"projection": None, "histogram": None}]


def test_the_view_model_needs_neither_matplotlib_nor_jinja() -> None:
    code = (
        "import sys, worker.report_view; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'jinja2', 'markupsafe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _stats(card: Any) -> dict[str, Any]:
    return {s.label: s for s in card.stats}
