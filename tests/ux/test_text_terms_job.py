"""Regions in words, checked: a dataset's texts reach the worker, and each region's description names
the words over-represented among its members' texts with their precision, recall and lift; the report
shows them with a few member texts (escaped); a dataset without texts has no text_terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spotlight.client.tables import region_rows
from spotlight.contract.protocol import REGIONS_FILE, REPORT_FILE, job_file
from spotlight.server.dataset_files import DatasetFiles, write_dataset
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from spotlight.server.text_terms import region_text_terms
from tests.runtime.helpers import enqueue, make_spec, render_queued_report
from worker.describe import describe_job
from worker.task import execute

FILLER = ["the cat sat on a mat", "rain fell over the hills", "a quiet evening with tea", "trains run late today"]


def _planted(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """n rows in 4-d; a tight cluster of n/10 of them has high loss and texts that mention 'penguin colony'."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    planted = np.zeros(n, dtype=bool)
    planted[rng.choice(n, size=n // 10, replace=False)] = True
    emb[planted] = np.float32([3, 3, 0, 0]) + 0.3 * emb[planted]
    losses = rng.random(n).astype(np.float32) + 2.0 * planted
    texts = [
        (f"<b>penguin colony</b> #{i} " if planted[i] else "") + FILLER[int(rng.integers(len(FILLER)))]
        for i in range(n)
    ]
    return emb, losses, texts, planted


def test_the_planted_word_is_named_with_high_precision_and_recall() -> None:
    _, losses, texts, planted = _planted()
    members = np.flatnonzero(planted)

    def read(idx: np.ndarray) -> list[str]:
        return [texts[int(i)] for i in idx]

    (d,) = describe_job([members], losses, read_texts=read, n_bootstrap=0)
    terms = {t["term"]: t for t in d["text_terms"]}
    assert "penguin" in terms and "penguin colony" in terms
    assert terms["penguin"]["precision"] == pytest.approx(1.0) and terms["penguin"]["recall"] == pytest.approx(1.0)
    # no held-out split given: the lift is on rows outside the region, and says so; none mention it there
    assert d["text_terms_lift_on"] == "non_members" and terms["penguin"]["lift_rows"] == 0
    assert terms["penguin"]["lift"] is None
    assert d["text_examples"][0] == texts[members[0]]

    heldout = np.zeros(len(texts), dtype=bool)
    heldout[::2] = True
    searched_members = np.flatnonzero(planted & ~heldout)  # a search on the other rows finds these
    (h,) = describe_job([searched_members], losses, read_texts=read, heldout=heldout, n_bootstrap=0)
    held = {t["term"]: t for t in h["text_terms"]}["penguin"]
    assert h["text_terms_lift_on"] == "heldout"
    assert held["lift_rows"] == int((planted & heldout).sum()) and held["lift"] > 2.0
    assert held["precision"] == pytest.approx(1.0) and held["recall"] == pytest.approx(1.0)
    # a filler phrase every row may hold is not over-represented among the members
    assert "cat sat" not in terms


def test_a_term_members_and_others_share_alike_has_low_precision_and_ranks_below() -> None:
    _, losses, texts, planted = _planted()
    texts = [t + " common words" for t in texts]  # every row mentions it
    rows = np.arange(len(texts))
    found = region_text_terms(
        [texts[i] for i in np.flatnonzero(planted)], int(planted.sum()), rows, texts, planted, losses, top=100
    )
    order = [t["term"] for t in found["terms"]]
    common = found["terms"][order.index("common words")]
    assert common["precision"] == pytest.approx(planted.mean()) and common["recall"] == 1.0
    assert common["lift"] == pytest.approx(1.0)  # every row outside mentions it: its lift there is their mean
    assert order.index("penguin") < order.index("common words")


def test_label_items_are_rules_with_precision_and_recall() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    (d,) = describe_job([np.array([6, 7, 8, 0])], np.arange(10.0), labels=labels, n_bootstrap=0)
    top = d["labels"]["over_represented"][0]
    assert top["value"] == 1
    assert top["precision"] == pytest.approx(3 / 4) and top["recall"] == pytest.approx(3 / 4)


def test_without_texts_there_is_no_text_terms() -> None:
    _, losses, _, planted = _planted()
    (d,) = describe_job([np.flatnonzero(planted)], losses, n_bootstrap=0)
    assert "text_terms" not in d and "text_examples" not in d
    assert region_rows([{"index": 0, "description": d}])[0]["text_terms"] == ""


def test_job_with_texts_describes_regions_in_words_and_reports_them_escaped(
    store_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, store_url=str(store_dir), progress_interval_s=0.05)
    store = ArtifactStore(str(store_dir))
    emb, losses, texts, planted = _planted()
    sha = write_dataset(store, str(tmp_path / "w"), emb, losses, texts=texts)["sha256"]
    files = DatasetFiles(store, sha)
    assert files.has("texts") and files.texts([3, 0]) == [texts[3], texts[0]]
    params = {"n_spotlights": 1, "steps": 60, "restarts": 2, "spotlight_size": 0.1, "device": "cpu"}
    spec = make_spec(sha, params)
    assert execute(spec, enqueue(redis_url, spec, settings), settings, store)["status"] == "finished"

    region = store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"][0]
    desc = region["description"]
    terms = {t["term"]: t for t in desc["text_terms"]}
    assert "penguin" in terms and terms["penguin"]["precision"] >= 0.8
    # the job's verdict split: the term's lift is measured on rows the search never saw, and the
    # planted word's rows fail there too
    assert desc["text_terms_lift_on"] == "heldout"
    assert terms["penguin"]["lift_rows"] > 0 and terms["penguin"]["lift"] > 2.0
    row = region_rows([region])[0]
    assert '"penguin' in row["text_terms"] and row["text_terms_lift_on"] == "heldout"

    assert render_queued_report(settings, spec.job_id, store)["report"] == "ready"
    page = store.read_bytes(job_file(spec.job_id, REPORT_FILE)).decode()
    assert "In its texts" in page and "held-out rows" in page
    assert "&lt;b&gt;penguin colony&lt;/b&gt;" in page and "<b>penguin colony</b>" not in page


def test_a_job_too_small_for_a_verdict_measures_term_lift_outside_the_region_and_says_so(
    store_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """No held-out split (too few held-out rows per region for a verdict): every row was searched, so
    a term's lift is measured on rows outside the region, and `text_terms_lift_on` says which."""
    settings = Settings(redis_url=redis_url, store_url=str(store_dir), progress_interval_s=0.05)
    store = ArtifactStore(str(store_dir))
    emb, losses, texts, _ = _planted()
    sha = write_dataset(store, str(tmp_path / "w"), emb, losses, texts=texts)["sha256"]
    params = {"n_spotlights": 1, "steps": 30, "restarts": 1, "spotlight_size": 0.02, "device": "cpu"}
    spec = make_spec(sha, params)
    assert execute(spec, enqueue(redis_url, spec, settings), settings, store)["status"] == "finished"

    document = store.read_json(job_file(spec.job_id, REGIONS_FILE))
    assert document["tested"] is False
    assert document["regions"][0]["description"]["text_terms_lift_on"] == "non_members"
