"""The HTML report: self-contained, escaped, and rendered by a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spotlight.contract.members import member_set
from tests.ux.example import build_report, members_of, planted_dataset, planted_regions, with_members
from worker.describe import describe_regions, metadata_columns
from worker.report import fallback_report, image_link, image_src, job_report, loss_bins, member_rows, render_report

CHROMIUM = shutil.which("chromium")  # found as .ci/run finds it (`command -v chromium`)


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    data = planted_dataset(n=800, d=8)
    regions, weights = planted_regions(data)
    return {"data": data, "regions": regions, "weights": weights, "html": build_report(data, regions, weights)}


class _Refs(HTMLParser):
    """Every URL-carrying attribute and every tag name in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.attr_names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            self.attr_names.add(name)
            if name in ("src", "href", "srcset", "action", "data", "poster") and value is not None:
                self.urls.append((tag, name, value))


def _refs(html: str) -> _Refs:
    p = _Refs()
    p.feed(html)
    return p


def test_report_has_the_sections_a_reader_needs(example: dict[str, Any]) -> None:
    html = example["html"]
    assert html.startswith("<!DOCTYPE html>")
    assert "job_0123456789abcdef01234567" in html
    for j in range(len(example["regions"])):
        assert f'id="region-{j}"' in html
    # numbers of the regions are shown: the kernel-weighted loss and, first, the member set's size
    wl = example["regions"][0]["weighted_loss"]
    assert f"{wl:.4g}" in html
    assert f"<b>{example['regions'][0]['n_members']}</b>" in html
    # the planted pockets' composition is what the page says stands out
    assert "time = <b>night</b>" in html
    # overview + a projection and a loss histogram per region
    assert html.count("data:image/png;base64,") == 1 + 2 * len(example["regions"])
    assert "Top members" in html and "img-" in html and "Members in common" in html


def test_no_external_assets_and_no_script(example: dict[str, Any]) -> None:
    refs = _refs(example["html"])
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    for tag, attr, url in refs.urls:
        if attr == "href":
            assert url.startswith("#"), url  # only in-page links (the example's metadata has no URL)
        else:
            assert tag == "img" and url.startswith("data:image/"), (tag, attr, url)
    assert "@import" not in example["html"] and "url(" not in example["html"]
    assert "Content-Security-Policy" in example["html"]


def _one_row_report(
    metadata: dict[str, Any],
    ids: list[Any] | None = None,
    params: dict[str, Any] | None = None,
    job_id: str = "job_<x>",
) -> str:
    emb = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    losses = np.array([1.0, 2.0, 3.0])
    w = np.array([[1.0], [0.5], [0.0]])
    region = {
        "index": 0,
        "center": [0.0, 0.0],
        "weighted_loss": 1.33,
        "mean_loss": 2.0,
        "lift": 0.66,
        "total_weight": 1.5,
        "size_requested": 1.0,
        "kernel": "gaussian",
        "n_members": 2,
        "effective_size": 1.5,
        "overlap": [],
    }
    members = np.array([0, 1])
    meta = [metadata, metadata, metadata]
    desc = describe_regions(
        [members], losses, np.array([0, 1, 1]), np.array([1, 1, 1]), metadata_columns(meta), n_bootstrap=0
    )
    rows = member_rows(members, w[:, 0], losses, np.array([0, 1, 1]), np.array([1, 1, 1]), ids or ["a", "b"], meta[:2])
    return render_report({"id": job_id, "params": params or {}}, [region], desc, emb, losses, w, [members], [rows])


HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>{{ 7*7 }}{% raw %}'


def test_user_content_is_escaped_everywhere() -> None:
    """Ids, metadata keys and values (shown in the members table and, as categories, in what stands
    out), the job's id and parameters: all hostile, all shown as text by the autoescaping templates."""
    html = _one_row_report(
        {
            "caption": HOSTILE,
            "link": "javascript:alert(3)",
            HOSTILE: "key too",
            "image": "javascript:alert(4)",
            "photo": 'https://h.example/a.png"><script>alert(5)</script>',
        },
        ids=[HOSTILE, "b"],
        params={"seed": HOSTILE},
        job_id=f"job_{HOSTILE}",
    )
    assert "<script>" not in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "49" not in text and text.count("{% raw %}") == text.count("{{ 7*7 }}") > 0  # data is never a template
    refs = _refs(html)
    assert "script" not in refs.tags
    assert refs.tags.count("img") == html.count("data:image/png;base64,")  # only the plots are images
    assert not [a for a in refs.attr_names if a.startswith("on")]  # no event handler got through
    assert all(not url.lower().startswith("javascript") for _, _, url in refs.urls)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in html  # shown as the text it is
    assert "javascript:alert(3)" in html  # shown as text
    assert "job_&lt;script&gt;" in html


def test_hostile_values_in_the_fallback_page_are_escaped_too() -> None:
    html = fallback_report({"id": HOSTILE}, [{"index": 0, "n_members": 3}], reason=HOSTILE)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script" not in _refs(html).tags


def test_inline_images_only_from_data_urls_and_http_images_become_links() -> None:
    """Opening the report contacts no other host: an http(s) image URL is a link, never an <img>."""
    html = _one_row_report(
        {
            "thumbnail": "https://cdn.example.org/a/b.jpg?x=1&y=2",
            "photo": "http://h/p",
            "caption": "plain text here",
            "inline": "data:image/png;base64,iVBORw0KGgo=",
        }
    )
    refs = _refs(html)
    imgs = [url for tag, _, url in refs.urls if tag == "img"]
    assert "data:image/png;base64,iVBORw0KGgo=" in imgs
    assert all(u.startswith("data:image/") for u in imgs)
    links = [url for tag, attr, url in refs.urls if tag == "a" and attr == "href" and not url.startswith("#")]
    assert set(links) == {"https://cdn.example.org/a/b.jpg?x=1&y=2", "http://h/p"}  # parsed back from &amp;
    assert "plain text here" in html
    assert "img-src data:;" in html  # and the page's CSP forbids loading any other image


@pytest.mark.parametrize(
    ("field", "value", "inline", "link"),
    [
        ("img", "https://x.org/a.png", False, True),
        ("caption", "https://x.org/page.html", False, False),
        ("thumbnail", "https://x.org/render?id=3", False, True),
        ("img", "javascript:alert(1)", False, False),
        ("img", "data:text/html,<script>", False, False),
        ("img", "data:image/png;base64,AAAA", True, False),
        ("img", 'data:image/png;base64,AA"onerror=x', False, False),
        ("img", "https://x.org/a b.png", False, False),
        ("img", 12, False, False),
    ],
)
def test_image_rules(field: str, value: Any, inline: bool, link: bool) -> None:
    assert (image_src(field, value) is not None) is inline
    assert (image_link(field, value) is not None) is link


def test_renders_with_no_regions_and_big_n_is_subsampled() -> None:
    rng = np.random.default_rng(0)
    n = 30000
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    losses = rng.random(n)
    w = np.exp(-((emb - 1.0) ** 2).sum(axis=1))[:, None]
    region = {
        "index": 0,
        "center": [1.0] * 4,
        "weighted_loss": 0.6,
        "mean_loss": 0.5,
        "lift": 1.2,
        "total_weight": float(w.sum()),
        "size_requested": 600,
    }
    members = member_set(w[:, 0], "gaussian")
    html = render_report({"id": "job_big"}, [region], [None], emb, losses, w, [members], [[]])
    assert "4,000 of 30,000 rows shown" in html
    empty = render_report({"id": "job_none"}, [], [], emb[:10], losses[:10], np.zeros((10, 0)), [], [])
    assert "No regions" in empty


def _chromium_screenshot(
    html_file: Path, out: Path, tmp: Path, height: int = 2400
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--hide-scrollbars",
            f"--window-size=1200,{height}",
            f"--screenshot={out}",
            html_file.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )


def _pixels_near(image: Any, hex_colour: str, tolerance: int = 12) -> int:
    """How many pixels of an RGB image are within `tolerance` of a colour on every channel."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(rgb - target) <= tolerance).all(axis=2).sum())


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium on PATH (apt-get install -y chromium; .ci/run installs it)"
)
def test_page_renders_in_headless_chromium(example: dict[str, Any], tmp_path: Path) -> None:
    """The page as a browser draws it: the page background, and each region's colour in the PCA view
    (its members highlighted) — not only a PNG of some size."""
    from PIL import Image

    from worker.report import PALETTE

    page = tmp_path / "report.html"
    page.write_text(example["html"], encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = _chromium_screenshot(page, shot, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (1200, 2400)
    total = image.size[0] * image.size[1]
    assert _pixels_near(image, "#f6f7f9", 2) > total // 10  # the page's background, not a blank white page
    for k in range(len(example["regions"])):
        drawn = _pixels_near(image, PALETTE[k % len(PALETTE)])
        assert drawn > 200, f"region {k}'s colour {PALETTE[k]} covers only {drawn} pixels"
    assert _pixels_near(image, "#ff00ff", 40) == 0  # a colour the report never uses: the count is selective


if __name__ == "__main__":  # regenerate docs/report.png from the example
    import sys
    import tempfile

    from tests.ux.example import engine_regions

    data = planted_dataset()
    regions, weights, device, _ = engine_regions(data, n_permutations=19)
    html = build_report(
        data,
        regions,
        weights,
        {
            "device": device,
            "params": {
                "n_spotlights": 3,
                "spotlight_size": 0.03,
                "steps": 400,
                "kernel": "gaussian",
                "n_permutations": 19,
            },
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png")
        proc = _chromium_screenshot(
            page, out.resolve(), Path(tmp), height=int(sys.argv[2]) if len(sys.argv) > 2 else 2400
        )
        print(out, proc.returncode)


def test_job_report_lists_the_stored_contribution_order_through_the_readers() -> None:
    """The report shows the first rows of the order the worker stored for `order=contribution`; it
    does not rank members itself."""
    data = planted_dataset(n=400, d=6, seed=1)
    regions, weights = planted_regions(data)
    sets = members_of(regions, weights)
    stored = [np.roll(m, 3) for m in sets]  # any order: the report must follow it, not recompute one
    asked: list[list[int]] = []

    def ids(idx: np.ndarray) -> list[str]:
        asked.append(idx.tolist())
        return [data["ids"][i] for i in idx]

    html = job_report(
        {"id": "job_r"},
        regions,
        [None, None],
        data["embeddings"],
        data["losses"],
        weights,
        sets,
        stored,
        labels=data["labels"],
        predictions=data["predictions"],
        read_ids=ids,
        read_metadata=lambda idx: [data["metadata"][i] for i in idx],
    )
    assert asked == [m[:12].tolist() for m in stored]
    assert data["ids"][stored[0][0]] in html and "contribution" in html


def test_p_value_at_its_floor_is_shown_as_a_bound() -> None:
    from worker.report import _pval

    assert _pval(1 / 20, 19).text == "≤ 0.05" and _pval(1 / 20, 19).cls == "good"
    assert _pval(0.3, 19).text == "0.3"
    assert _pval(None, 19).text == "—"


# ----- degenerate inputs: a report always, saying why a plot is missing -----
def _report_for(
    emb: np.ndarray, losses: np.ndarray, weights: np.ndarray, kernel: str = "gaussian", labels: np.ndarray | None = None
) -> str:
    """A report as the worker writes it (member sets, descriptions, stored orders) for these arrays."""
    from spotlight.contract.contribution import order_by_contribution

    weights = np.asarray(weights, dtype=np.float32)  # as stored: a weight of 1e-300 is 0 here
    d = emb.shape[1]
    regions = [
        {
            "index": k,
            "center": [0.0] * d,
            "precision": 1.0,
            "kernel": kernel,
            "shape": "spherical",
            "size_requested": 1.0,
            "total_weight": float(weights[:, k].sum()),
            "weighted_loss": 1.0,
            "mean_loss": 1.0,
            "lift": 1.0,
            "feasible": True,
        }
        for k in range(weights.shape[1])
    ]
    with_members(regions, weights)
    sets = members_of(regions, weights)
    desc = describe_regions(sets, losses, labels, labels, n_bootstrap=20)
    orders = [order_by_contribution(m, weights[:, k], losses) for k, m in enumerate(sets)]
    return job_report(
        {"id": "job_degenerate"}, regions, desc, emb, losses, weights, sets, orders, labels=labels, predictions=labels
    )


def _check_every_region_is_explained(html: str, k: int) -> list[str]:
    """Each region card has its two plots, or for each missing one a note saying why; returns the notes."""
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    refs = _refs(html)
    assert "script" not in refs.tags
    notes = []
    for j in range(k):
        start = html.index(f'id="region-{j}"')
        end = html.find('id="region-', start + 10)
        card = html[start : end if end > 0 else len(html)]
        if "has no members" in card:
            notes.append("no members")
            continue
        why = re.findall(r"not drawn\. (\S[^<]*)</p>", card)
        assert card.count('class="plot"') + len(why) == 2, card[:3000]
        notes.extend(why)
    return notes


DEGENERATE = {
    "empty member set": (np.random.default_rng(0).normal(size=(50, 3)), np.linspace(0, 1, 50), np.zeros((50, 1))),
    "spotlight_size 1e-300": (
        np.random.default_rng(1).normal(size=(50, 3)),
        np.linspace(0, 1, 50),
        np.full((50, 1), 1e-300),
    ),
    "constant losses": (np.random.default_rng(2).normal(size=(50, 3)), np.full(50, 0.7), np.full((50, 1), 0.5)),
    "d = 1": (np.linspace(0, 1, 40)[:, None], np.linspace(0, 2, 40), np.linspace(0, 1, 40)[:, None]),
    "n = 1": (np.ones((1, 4)), np.array([2.0]), np.ones((1, 1))),
    "n = 2": (np.eye(2), np.array([0.0, 1.0]), np.array([[1.0], [0.2]])),
    "identical rows": (np.ones((30, 5)), np.linspace(0, 1, 30), np.full((30, 1), 1.0)),
    "losses mostly near 0": (
        np.random.default_rng(3).normal(size=(500, 4)),
        np.random.default_rng(3).exponential(0.01, size=500) ** 3,
        np.full((500, 1), 0.05),
    ),
    "more regions than colours": (
        np.random.default_rng(4).normal(size=(60, 2)),
        np.linspace(0, 1, 60),
        np.random.default_rng(4).random((60, 12)),
    ),
}


@pytest.mark.parametrize("case", list(DEGENERATE), ids=list(DEGENERATE))
def test_degenerate_inputs_still_get_a_report_that_says_why_a_plot_is_missing(case: str) -> None:
    emb, losses, weights = DEGENERATE[case]
    html = _report_for(emb, losses, weights)
    notes = _check_every_region_is_explained(html, weights.shape[1])
    expected = {
        "empty member set": "no members",
        "spotlight_size 1e-300": "no members",
        "constant losses": "losses equal",
        "n = 1": "1 row",
    }.get(case)
    if expected:
        assert any(expected in note for note in notes), notes
    else:
        assert not notes, notes  # these have something to draw, and draw it


@pytest.mark.slow
def test_degenerate_inputs_a_property(tmp_path: Path) -> None:
    """Any small dataset (one row or a few, one dimension or a few, weights with zeros, ties or
    denormals, constant or skewed losses, several regions) gives a whole report."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @st.composite
    def inputs(draw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        n, d, k = draw(st.integers(1, 7)), draw(st.integers(1, 3)), draw(st.integers(0, 3))
        values = st.sampled_from([0.0, 1e-300, 1e-3, 0.5, 1.0])
        emb = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, -2.5]), min_size=n * d, max_size=n * d))).reshape(n, d)
        losses = np.array(draw(st.lists(st.sampled_from([0.0, 1e-4, 0.3, 7.0]), min_size=n, max_size=n)))
        weights = np.array(draw(st.lists(values, min_size=n * k, max_size=n * k))).reshape(n, k)
        return emb, losses, weights, draw(st.sampled_from(["gaussian", "flat"]))

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs())
    def check(case: tuple[np.ndarray, np.ndarray, np.ndarray, str]) -> None:
        emb, losses, weights, kernel = case
        html = _report_for(emb, losses, weights, kernel, labels=np.arange(len(losses)) % 2)
        _check_every_region_is_explained(html, weights.shape[1])
        if weights.shape[1] == 0:
            assert "No regions" in html

    check()


@pytest.mark.parametrize(
    ("losses", "scale"),
    [
        (np.random.default_rng(0).exponential(0.05, 2000) ** 2, "log"),  # a classifier's losses: most near 0
        (np.concatenate([np.zeros(500), np.random.default_rng(1).exponential(0.05, 1500) ** 2]), "symlog"),
        (np.random.default_rng(2).random(2000), "linear"),
    ],
)
def test_loss_histogram_goes_logarithmic_when_most_losses_are_near_0(losses: np.ndarray, scale: str) -> None:
    bins, got = loss_bins(losses)
    assert got == scale
    assert bins[0] <= losses.min() and bins[-1] >= losses.max() and (np.diff(bins) > 0).all()
    counts, _ = np.histogram(losses, bins)
    # on the chosen axis the bulk of the losses spreads over several bins instead of filling one
    assert counts.max() < 0.5 * losses.size


def test_the_projection_finds_the_leading_directions_without_a_full_svd() -> None:
    from worker.report import _top_components

    rng = np.random.default_rng(0)
    n, d = 3000, 300
    a, b = rng.normal(size=d), rng.normal(size=d)
    X = (
        rng.normal(size=(n, d))
        + np.outer(rng.normal(size=n) * 6, a / np.linalg.norm(a))
        + np.outer(rng.normal(size=n) * 4, b / np.linalg.norm(b))
    )
    Xc = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    comps = _top_components(Xc, seed=0)
    assert comps.shape == (2, d)
    assert np.allclose(np.abs(np.sum(comps * vt[:2], axis=1)), 1.0, atol=1e-6)  # same directions, up to sign


def test_the_verdict_leads_the_report_and_a_null_job_says_no_weak_spot_found(example: dict[str, Any]) -> None:
    """The planted pockets are significant on held-out rows; the same regions on shuffled losses are not,
    and that report says "No weak spot found" where the eye lands, regions still listed as noise."""
    html = example["html"]
    assert [r["significant"] for r in example["regions"]] == [True, True]
    assert "2 of 2 regions are significant" in html and "not distinguishable from noise" not in html
    data = dict(example["data"])
    data["losses"] = np.random.default_rng(1).permutation(data["losses"])
    regions, weights = planted_regions(data)
    assert not any(r["significant"] for r in regions)
    null = build_report(data, regions, weights)
    assert "No weak spot found" in null and null.count("not distinguishable from noise") >= len(regions)
    # the regions' place is their members' mean, and a member row is named to open
    assert "their mean (where the region is) marked ×" in null and "A member to open" in null
