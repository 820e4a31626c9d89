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

from tests.ux.example import build_report, planted_dataset, planted_regions
from worker.report import image_src, member_rows, render_report

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
    # numbers of the regions are shown
    wl = example["regions"][0]["weighted_loss"]
    assert f"{wl:.4g}" in html
    # the planted pockets' composition is what the page says stands out
    assert "time = <b>night</b>" in html
    assert html.count("data:image/png;base64,") == 1 + len(example["regions"])  # overview + one per region
    assert "Top members" in html and "img-" in html


def test_no_external_assets_and_no_script(example: dict[str, Any]) -> None:
    refs = _refs(example["html"])
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    for tag, attr, url in refs.urls:
        if attr == "href":
            assert url.startswith("#"), url  # only in-page links
        else:
            assert tag == "img" and url.startswith("data:image/"), (tag, attr, url)
    assert "@import" not in example["html"] and "url(" not in example["html"]
    assert "Content-Security-Policy" in example["html"]


def _one_row_report(metadata: dict[str, Any], ids: list[Any] | None = None, params: dict[str, Any] | None = None) -> str:
    emb = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    losses = np.array([1.0, 2.0, 3.0])
    w = np.array([[1.0], [0.5], [0.0]])
    region = {"index": 0, "center": [0.0, 0.0], "weighted_loss": 1.33, "mean_loss": 2.0, "lift": 0.66,
              "total_weight": 1.5, "size_requested": 1.0}
    rows = member_rows([0, 1], w[:, 0], losses, np.array([0, 1, 1]), np.array([1, 1, 1]),
                       ids or ["a", "b"], [metadata, metadata])
    return render_report({"id": "job_<x>", "params": params or {}}, [region], [None], emb, losses, w, [rows])


def test_user_content_is_escaped_everywhere() -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    html = _one_row_report(
        {"caption": evil, "link": "javascript:alert(3)", evil: "key too", "image": "javascript:alert(4)"},
        ids=[evil, "b"], params={"seed": evil},
    )
    assert "<script>" not in html
    refs = _refs(html)
    assert "script" not in refs.tags
    assert not [a for a in refs.attr_names if a.startswith("on")]  # no event handler got through
    assert all(not url.lower().startswith("javascript") for _, _, url in refs.urls)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:alert(3)" in html  # shown as text
    assert "job_&lt;x&gt;" in html


def test_images_only_from_http_and_data_image_urls() -> None:
    html = _one_row_report({"thumbnail": "https://cdn.example.org/a/b.jpg?x=1&y=2", "photo": "http://h/p",
                            "caption": "plain text here", "inline": "data:image/png;base64,iVBORw0KGgo="})
    imgs = [url for tag, _, url in _refs(html).urls if tag == "img" and not url.startswith("data:image/png;base64,iVBORw0KGgoAAAA")]
    members_imgs = [u for u in imgs if "example.org" in u or u == "http://h/p" or u == "data:image/png;base64,iVBORw0KGgo="]
    assert "https://cdn.example.org/a/b.jpg?x=1&y=2" in members_imgs  # parsed back from &amp;
    assert "http://h/p" in members_imgs  # a URL in a field named like an image
    assert "data:image/png;base64,iVBORw0KGgo=" in members_imgs
    assert "plain text here" in html
    # every external reference is one of the members' own image URLs
    external = [u for _, _, u in _refs(html).urls if re.match(r"(?i)https?:", u)]
    assert set(external) == {"https://cdn.example.org/a/b.jpg?x=1&y=2", "http://h/p"}


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("img", "https://x.org/a.png", True),
        ("caption", "https://x.org/page.html", False),
        ("thumbnail", "https://x.org/render?id=3", True),
        ("img", "javascript:alert(1)", False),
        ("img", "data:text/html,<script>", False),
        ("img", "data:image/png;base64,AAAA", True),
        ("img", 'data:image/png;base64,AA"onerror=x', False),
        ("img", "https://x.org/a b.png", False),
        ("img", 12, False),
    ],
)
def test_image_src_rules(field: str, value: Any, ok: bool) -> None:
    assert (image_src(field, value) is not None) is ok


def test_renders_with_no_regions_and_big_n_is_subsampled() -> None:
    rng = np.random.default_rng(0)
    n = 30000
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    losses = rng.random(n)
    w = np.exp(-((emb - 1.0) ** 2).sum(axis=1))[:, None]
    region = {"index": 0, "center": [1.0] * 4, "weighted_loss": 0.6, "mean_loss": 0.5, "lift": 1.2,
              "total_weight": float(w.sum()), "size_requested": 600}
    html = render_report({"id": "job_big"}, [region], [None], emb, losses, w, [[]])
    assert "4,000 of 30,000 rows shown" in html
    empty = render_report({"id": "job_none"}, [], [], emb[:10], losses[:10], np.zeros((10, 0)), [])
    assert "No regions" in empty


def _chromium_screenshot(html_file: Path, out: Path, tmp: Path, height: int = 2400) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--hide-scrollbars", f"--window-size=1200,{height}",
         f"--screenshot={out}", html_file.resolve().as_uri()],
        capture_output=True, timeout=120, check=False,
    )


def _pixels_near(image: Any, hex_colour: str, tolerance: int = 12) -> int:
    """How many pixels of an RGB image are within `tolerance` of a colour on every channel."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(rgb - target) <= tolerance).all(axis=2).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH (apt-get install -y chromium; .ci/run installs it)")
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
    html = build_report(data, regions, weights, {"device": device,
                                                 "params": {"n_spotlights": 3, "spotlight_size": 0.03, "steps": 400,
                                                            "kernel": "gaussian", "n_permutations": 19}})
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png")
        proc = _chromium_screenshot(page, out.resolve(), Path(tmp), height=int(sys.argv[2]) if len(sys.argv) > 2 else 2400)
        print(out, proc.returncode)


def test_job_report_picks_top_members_through_the_readers() -> None:
    from worker.report import job_report

    data = planted_dataset(n=400, d=6, seed=1)
    regions, weights = planted_regions(data)
    asked: list[list[int]] = []

    def ids(idx: np.ndarray) -> list[str]:
        asked.append(idx.tolist())
        return [data["ids"][i] for i in idx]

    html = job_report({"id": "job_r"}, regions, [None, None], data["embeddings"], data["losses"], weights,
                      labels=data["labels"], predictions=data["predictions"], read_ids=ids,
                      read_metadata=lambda idx: [data["metadata"][i] for i in idx], member_min_weight=0.2)
    # top members: weight >= the member threshold, highest weight x (loss - min loss) first
    losses = data["losses"].astype(np.float64)
    contrib = weights[:, 0].astype(np.float64) * (losses - losses.min())
    inside = np.flatnonzero(weights[:, 0] >= 0.2)
    top0 = inside[np.argsort(-contrib[inside], kind="stable")][:12].tolist()
    assert asked[0] == top0
    assert data["ids"][top0[0]] in html and "contribution" in html
    assert top0 != np.argsort(-weights[:, 0], kind="stable")[:12].tolist()  # not the weight order


def test_p_value_at_its_floor_is_shown_as_a_bound() -> None:
    from worker.report import _pval

    assert "≤ 0.05" in _pval(1 / 20, 19) and "good" in _pval(1 / 20, 19)
    assert "≤" not in _pval(0.3, 19) and "0.3" in _pval(0.3, 19)
    assert "—" in _pval(None, 19)
