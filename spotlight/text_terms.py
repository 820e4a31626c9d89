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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TermRule:
    """One description item as a rule: "text mentions `term`"."""

    term: str
    score: float  # c-TF-IDF among the members
    precision: float  # of the rows mentioning it (the rows searched), the share that are members
    recall: float  # of the members, the share mentioning it
    held_out_lift: float | None  # mean loss of held-out rows mentioning it / held-out mean; None: no such row
    held_out_rows: int  # held-out rows mentioning it


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
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for text, is_member in zip(texts, members, strict=True):
        (inside if is_member else outside).update(terms_of(text))
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


def describe(
    texts: list[str],
    members: np.ndarray,
    held_out_texts: list[str],
    held_out_losses: np.ndarray,
    top: int = 5,
    min_count: int = 3,
) -> list[TermRule]:
    """The region's over-represented terms, each checked: precision and recall against the members (on
    the rows searched, `texts`), lift on the held-out rows (rows the search did not use)."""
    mentions = [terms_of(t) for t in texts]
    held = [terms_of(t) for t in held_out_texts]
    base = float(np.mean(held_out_losses)) if len(held_out_losses) else 0.0
    rules = []
    for term, score in over_represented(texts, members, top, min_count):
        has = np.array([term in m for m in mentions])
        hits = int(has.sum())
        precision = float(members[has].mean()) if hits else 0.0
        recall = float(has[members].mean()) if members.any() else 0.0
        held_has = np.array([term in m for m in held], dtype=bool)
        lift = float(held_out_losses[held_has].mean() / base) if held_has.any() and base > 0 else None
        rules.append(TermRule(term, score, precision, recall, lift, int(held_has.sum())))
    return rules
