"""Regions in words, checked: the words and phrases over-represented among a region's members' texts,
each reported as a rule a person can apply ("text mentions X") with its precision and recall against
the members and its lift on rows the search did not use.

Terms are ranked by class-based TF-IDF, as topic-modelling tools rank a topic's words (BERTopic's
c-TF-IDF): the region's members are one class, the other rows the other; a term's score is its
frequency among the members' words times log(1 + A / f), with f its frequency over all rows and A the
mean number of words per class. Unigrams and bigrams of lower-cased words (none holding a common
English function word), a term kept only when at least `min_count` members mention it.

Why the checks: a description that sounds right need not hold. Precision (of the rows mentioning the
term, the share that are members) and recall (of the members, the share mentioning it) say how well the
rule describes the region; the lift on held-out rows (mean loss of held-out rows mentioning the term
over the held-out mean) says whether the rule itself finds failures on rows the search never saw.

numpy only (the client, the API and the worker can all import it).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

WORD = re.compile(r"[a-z][a-z']+")
STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be because been before being but by can could
    did do does doing don't for from had has have having he her here hers him his how i if in into is it
    it's its just me more most my no nor not now of off on once only or other our ours out over own same
    she should so some such than that that's the their theirs them then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours one us even like get go may must much many never always every let say said make
    know""".split()
)


def terms_of(text: str) -> set[str]:
    """The unigrams and bigrams of a text (lower-cased words; none that is or holds a function word)."""
    words = WORD.findall(text.lower())
    grams = {w for w in words if w not in STOPWORDS}
    grams.update(
        f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a not in STOPWORDS and b not in STOPWORDS
    )
    return grams


def over_represented(
    texts: list[str], members: np.ndarray, top: int = 5, min_count: int = 3
) -> list[tuple[str, float]]:
    """The `top` terms of highest c-TF-IDF for the member rows (bool mask) against the others."""
    grams = [terms_of(t) for t in texts]
    return rank_terms(
        [g for g, m in zip(grams, members, strict=True) if m],
        [g for g, m in zip(grams, members, strict=True) if not m],
        top,
        min_count,
    )


def rank_terms(
    inside_terms: list[set[str]], outside_terms: list[set[str]], top: int = 5, min_count: int = 3
) -> list[tuple[str, float]]:
    """:func:`over_represented` from the rows' term sets (:func:`terms_of`), members' and others'."""
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for grams in inside_terms:
        inside.update(grams)
    for grams in outside_terms:
        outside.update(grams)
    words_in, words_out = sum(inside.values()), sum(outside.values())
    if words_in == 0:
        return []
    mean_words = (words_in + words_out) / 2.0
    scored = []
    for term, count in inside.items():
        if count < min_count:
            continue
        total = count + outside.get(term, 0)
        scored.append((term, count / words_in * math.log(1.0 + mean_words / total)))
    scored.sort(key=lambda kv: (-kv[1], kv[0]))
    return scored[:top]


# Rows whose text is read to describe a job's regions: a uniform sample of all rows (the background the
# members are compared with, and the rows the lift is measured on), and each region's members (its
# heaviest, past that). Strings are read by offset (spotlight/server/dataset_files.py), never all n at once.
TEXT_SAMPLE = 20_000
# A term's lift needs this many lift rows mentioning it; fewer give a ratio of a handful of losses (on
# the real MiniLM set, 3.04 from one row), so it is reported as None with its row count.
MIN_LIFT_ROWS = 5
EXAMPLES = 3  # member texts shown with a description (the heaviest members)
EXAMPLE_CHARS = 300


def text_sample(n: int, limit: int = TEXT_SAMPLE, seed: int = 0) -> np.ndarray:
    """All rows when n <= limit, else `limit` sorted rows drawn uniformly (seeded)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)).astype(np.int64)


def region_text_terms(
    member_texts: list[str],
    n_members: int,
    sample: np.ndarray,
    sample_texts: list[str],
    member_mask: np.ndarray,
    losses: np.ndarray,
    heldout: np.ndarray | None = None,
    top: int = 5,
    min_count: int = 3,
    sample_terms: list[set[str]] | None = None,
) -> dict[str, object]:
    """A region's over-represented terms, each checked as the rule "text mentions X".

    Parameters
    ----------
    member_texts : the texts of the region's members (all, or its heaviest `len(member_texts)`)
    n_members : how many members the region has
    sample, sample_texts : a uniform sample of the dataset's rows (:func:`text_sample`) and their texts
    member_mask : (n,) bool, the region's members
    losses : (n,) the losses searched
    heldout : (n,) bool, optional: rows the search did not use. Given, a term's lift is measured on
        the sampled held-out rows (``lift_on: "heldout"``). Without it (a job with no held-out split),
        the lift is measured on the sampled rows outside the region (``lift_on: "non_members"``): rows
        the search saw and left out, so a lift above 1 there says the rule reaches beyond the region,
        not that it holds on unseen data.
    sample_terms : the sample's term sets (``terms_of`` of each of `sample_texts`), when the caller
        describes several regions and computes them once

    Returns ``{"terms": [{"term", "score", "precision", "recall", "lift", "lift_rows"}], "lift_on",
    "rows_read"}``. ``precision``: of the rows searched (all rows, or those outside `heldout`)
    mentioning the term, the share that are members (the non-members' count estimated from the
    sample); terms are ranked against the same non-members; ``recall``: of the members read, the share
    mentioning it; ``lift``: mean loss of the lift rows mentioning it over their mean (None when fewer
    than MIN_LIFT_ROWS mention it, or a non-positive mean); ``lift_rows``: how many lift rows mention it.
    """
    n = int(member_mask.shape[0])
    in_sample = member_mask[sample]
    grams = sample_terms if sample_terms is not None else [terms_of(t) for t in sample_texts]
    if heldout is not None:
        held = np.asarray(heldout, dtype=bool)
        basis = held[sample]
        lift_on = "heldout"
        # Precision is about the rows searched: held-out rows are never members, so they are left out.
        searched = ~basis
        n_out = max(int((~held).sum()) - n_members, 0)
    else:
        basis = ~in_sample
        lift_on = "non_members"
        searched = np.ones(len(sample_texts), dtype=bool)
        n_out = n - n_members
    out_terms = [g for g, inside, s in zip(grams, in_sample, searched, strict=True) if s and not inside]
    basis_losses = np.asarray(losses, dtype=np.float64)[sample][basis]
    basis_terms = [g for g, b in zip(grams, basis, strict=True) if b]
    base = float(basis_losses.mean()) if basis_losses.size else 0.0
    member_terms = [terms_of(t) for t in member_texts]
    terms = []
    for term, score in rank_terms(member_terms, out_terms, top, min_count):
        hits_in = sum(term in m for m in member_terms)
        hits_out = sum(term in m for m in out_terms)
        est_in = hits_in * n_members / max(len(member_texts), 1)
        est_out = hits_out * n_out / len(out_terms) if out_terms else 0.0
        has = np.array([term in m for m in basis_terms], dtype=bool)
        enough = int(has.sum()) >= MIN_LIFT_ROWS
        lift = float(basis_losses[has].mean() / base) if enough and base > 0 else None
        terms.append(
            {
                "term": term,
                "score": float(score),
                "precision": float(est_in / (est_in + est_out)) if est_in + est_out > 0 else 0.0,
                "recall": float(hits_in / len(member_texts)) if member_texts else 0.0,
                "lift": lift,
                "lift_rows": int(has.sum()),
            }
        )
    return {"terms": terms, "lift_on": lift_on, "rows_read": len(member_texts) + len(sample_texts)}


def examples(member_texts: list[str], k: int = EXAMPLES, chars: int = EXAMPLE_CHARS) -> list[str]:
    """The first `k` member texts (members come heaviest first), each cut to `chars` characters."""
    return [t if len(t) <= chars else t[: chars - 1] + "…" for t in member_texts[:k]]
