"""What a person reads about a region: who is in it, and how sure we are that it is real.

Pure numpy (no torch, no Redis, no files), so it is tested on small arrays and the worker calls it
after the search. Three questions per region, after one rule:

Every description is computed on the region's **member set** (spotlight/contract/members.py), the rows a
person calls the region, each counted once (times its sample weight) — not over the whole dataset
weighted by the kernel, which for a gaussian region is mostly rows far from it.

1. **Composition** — which labels, predictions and categorical metadata values are over-represented
   among the members? The share of value v among members is compared with its share of the whole
   dataset; ``lift = share_inside / share_overall``. Values are ranked by *excess count*,
   ``count_inside - share_overall * n_members`` (how many more members hold v than a random set
   of the same size would): ranking by lift alone would put a value seen twice at the top.
2. **Loss, and how sure** — the members' mean loss against the dataset's (their ``lift``), with a
   bootstrap interval from the Poisson bootstrap (each member drawn Poisson(1) times, the
   streaming equivalent of resampling with replacement).
3. **Is the region noise?** — :func:`permutation_test`: shuffle the losses (which destroys any link
   between place in embedding space and loss), rerun the same search, and count how often the best
   region of a shuffled run scores at least as high as the region found. The search is injected
   (`search_fn`), so this module stays free of torch; the worker passes the engine. A long test can
   stop between two shuffles and go on later (:class:`NullSoFar`): the worker does so to give its
   worker to another tenant's job, and the p-values come out as an uninterrupted run's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spotlight.contract.verdict import poisson1
from spotlight.server import text_terms

# Example weights below this share of the largest are left out of the bootstrap (when it is given
# kernel weights): the far tail changes the interval by less than its own rounding while costing
# O(n) per resample.
_BOOTSTRAP_TAIL = 1e-3
_BOOTSTRAP_CHUNK = 64
BOOTSTRAP_UNITS = 4096  # examples (or random groups of them) a bootstrap resample draws
METADATA_LIMIT = 100_000  # rows of metadata read to describe regions (a uniform sample past that)
MAX_CATEGORIES = 50  # a metadata field with more distinct values is text or an id, not a category
MISSING = "(missing)"
_URLISH = re.compile(r"^(https?://|data:)", re.IGNORECASE)


def describe_region(
    members: np.ndarray,
    losses: np.ndarray,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    metadata_columns: Mapping[str, Sequence[Any]] | None = None,
    rng_seed: int = 0,
    n_bootstrap: int = 1000,
    *,
    sample_weights: np.ndarray | None = None,
    top: int = 5,
    ci_level: float = 0.95,
    metadata_index: np.ndarray | None = None,
) -> dict[str, Any]:
    """Describe one region from its member set (spotlight/contract/members.py).

    Every number here is about the members, the rows a person calls the region, each counted once
    (times its sample weight): their mean loss against the dataset's, their error rate, which
    labels, predictions and metadata values they over-represent. The kernel-weighted loss (the
    search's objective) is the region's own ``weighted_loss``; it is not repeated here.

    Parameters
    ----------
    members : (m,) int array
        The region's member rows (``spotlight.contract.members.member_set``).
    losses : (n,) array
        The per-example losses searched.
    labels, predictions : (n,) int arrays, optional
    metadata_columns : {field: values}, optional
        One list per metadata field (see :func:`metadata_columns`). Fields with at most
        ``MAX_CATEGORIES`` distinct scalar values are described as categories, numeric fields with
        more as numbers (mean among members vs whole dataset); others (free text, ids) are skipped.
    rng_seed : int
        Seed of the bootstrap; same seed, same interval.
    n_bootstrap : int
        Bootstrap resamples (0 skips the interval).
    sample_weights : (n,) array, optional
        Per-example counts (the authors' `counts`); every row counts that many times, inside and overall.
    top : int
        How many over-represented values to keep per field.
    metadata_index : (r,) int array, optional
        The dataset rows the metadata lists describe, when they cover a uniform sample of rows
        rather than all n (big datasets: see :func:`metadata_sample`). Shares are then estimated
        on that sample, among members and overall alike.

    Returns
    -------
    dict, JSON-ready and never NaN::

        {"basis": "members", "n_members", "mean_loss", "dataset_mean_loss", "lift",
         "mean_loss_ci": [lo, hi] | None, "ci_level", "n_bootstrap",
         "error_rate": {"inside", "overall", "lift"} | None,    # with labels and predictions
         "labels": {...}, "predictions": {...},                 # see _composition
         "metadata": {field: {...}}, "numeric": {field: {"inside", "overall", "std_overall"}}}

    ``mean_loss`` and ``lift`` are None when the region has no members; ``lift`` also when the
    dataset's mean loss is not positive (a ratio of losses means nothing then).
    """
    loss = np.asarray(losses, dtype=np.float64).ravel()
    n = loss.size
    idx = np.asarray(members, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"member rows must lie in [0, {n})")
    inside = np.zeros(n)
    inside[idx] = 1.0
    w = _as_weights(inside, sample_weights)
    total = float(w.sum())
    overall_w = _as_weights(np.ones(n), sample_weights)
    finite = np.isfinite(loss)
    loss0 = np.where(finite, loss, 0.0)
    w_all = overall_w * finite
    dataset_mean = _finite(float(w_all @ loss0 / w_all.sum())) if w_all.sum() > 0 else 0.0
    w_loss = w * finite
    mean = _finite(float(w_loss @ loss0 / w_loss.sum())) if w_loss.sum() > 0 else None
    out: dict[str, Any] = {
        "basis": "members",
        "n_members": int(idx.size),
        "mean_loss": mean,
        "dataset_mean_loss": dataset_mean,
        "lift": _finite(mean / dataset_mean) if mean is not None and dataset_mean > 0 else None,
        "mean_loss_ci": None,
        "ci_level": ci_level,
        "n_bootstrap": int(n_bootstrap),
    }
    if mean is not None and n_bootstrap > 0:
        keep = w_loss > 0
        out["mean_loss_ci"] = bootstrap_interval(w_loss[keep], loss0[keep], n_bootstrap, rng_seed, ci_level)
    out["error_rate"] = None
    if labels is not None and predictions is not None:
        wrong = (np.asarray(labels).ravel() != np.asarray(predictions).ravel()).astype(np.float64)
        rate_in = float(w @ wrong / total) if total > 0 else 0.0
        rate_all = float(overall_w @ wrong / overall_w.sum()) if overall_w.sum() > 0 else 0.0
        out["error_rate"] = {"inside": _finite(rate_in), "overall": _finite(rate_all), "lift": _lift(rate_in, rate_all)}
    out["labels"] = _composition(_codes_of_ints(labels), w, overall_w, top) if labels is not None else None
    out["predictions"] = (
        _composition(_codes_of_ints(predictions), w, overall_w, top) if predictions is not None else None
    )
    out["metadata"] = {}
    out["numeric"] = {}
    if metadata_index is not None:
        m_idx = np.asarray(metadata_index, dtype=np.int64).ravel()
        w_m, overall_m = w[m_idx], overall_w[m_idx]
        out["metadata_rows"] = int(m_idx.size)
    else:
        w_m, overall_m = w, overall_w
    for field, values in (metadata_columns or {}).items():
        if len(values) != w_m.size:
            raise ValueError(f"metadata field {field!r} has {len(values)} values but expected {w_m.size}")
        kind, coded = _classify(values)
        if kind == "categorical":
            out["metadata"][field] = _composition(coded, w_m, overall_m, top)
        elif kind == "numeric":
            out["numeric"][field] = _numeric(coded[0], w_m, overall_m)
    return out


def describe_regions(
    member_sets: Sequence[np.ndarray],
    losses: np.ndarray,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    metadata_columns: Mapping[str, Sequence[Any]] | None = None,
    rng_seed: int = 0,
    n_bootstrap: int = 1000,
    *,
    sample_weights: np.ndarray | None = None,
    metadata_index: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """:func:`describe_region` for every region's member set."""
    return [
        describe_region(
            members,
            losses,
            labels,
            predictions,
            metadata_columns,
            rng_seed + k,
            n_bootstrap,
            sample_weights=sample_weights,
            metadata_index=metadata_index,
        )
        for k, members in enumerate(member_sets)
    ]


def describe_job(
    member_sets: Sequence[np.ndarray],
    losses: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    read_metadata: Callable[[np.ndarray], list[dict[str, Any]] | None] | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    metadata_limit: int = METADATA_LIMIT,
    read_texts: Callable[[np.ndarray], list[str] | None] | None = None,
    heldout: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Descriptions of every region of a finished search (:func:`iter_job_descriptions`, all at once)."""
    return [
        description
        for _, description in iter_job_descriptions(
            member_sets,
            losses,
            labels=labels,
            predictions=predictions,
            sample_weights=sample_weights,
            read_metadata=read_metadata,
            seed=seed,
            n_bootstrap=n_bootstrap,
            metadata_limit=metadata_limit,
            read_texts=read_texts,
            heldout=heldout,
        )
    ]


def iter_job_descriptions(
    member_sets: Sequence[np.ndarray],
    losses: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    read_metadata: Callable[[np.ndarray], list[dict[str, Any]] | None] | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    metadata_limit: int = METADATA_LIMIT,
    first: int = 0,
    read_texts: Callable[[np.ndarray], list[str] | None] | None = None,
    heldout: np.ndarray | None = None,
    text_limit: int = text_terms.TEXT_SAMPLE,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(k, description)`` of regions `first`, `first` + 1, ... of a finished search, one at a time.

    One at a time so that the worker can honour a cancel, or give its worker to another tenant,
    between two regions (a region's description on a million rows takes seconds), and go on later
    from region `first`: region k's bootstrap is seeded ``seed + k`` whichever run describes it.

    `read_metadata(indices)` returns the metadata objects of those rows (``DatasetFiles.metadata``)
    or None when the dataset has none. At most `metadata_limit` rows are read: beyond that, a
    uniform sample of rows (seeded) stands for the dataset — a region holding 2 % of n still has
    ~2 % of the sample, plenty to rank its over-represented values.

    `read_texts(indices)` returns those rows' texts (``DatasetFiles.texts``) or None when the dataset
    has none. With texts, each description gains ``text_terms`` (spotlight/server/text_terms.py: the words
    and phrases over-represented among the members, each checked as the rule "text mentions X"),
    ``text_terms_lift_on`` and ``text_examples``; texts are read for a uniform sample of at most
    `text_limit` rows and each region's heaviest `text_limit` members. `heldout` (an n-bool mask of
    rows the search did not use) is where a term's lift is measured; without it, on the rows outside
    the region, and ``text_terms_lift_on`` says which. Without texts the keys are absent.
    """
    if first >= len(member_sets):
        return
    n = int(np.asarray(losses).shape[0])
    columns: dict[str, list[Any]] | None = None
    index: np.ndarray | None = None
    if read_metadata is not None:
        index = metadata_sample(n, metadata_limit, seed)
        rows = read_metadata(np.arange(n) if index is None else index)
        columns = metadata_columns(rows) if rows is not None else None
    text_rows: np.ndarray | None = None
    sample_texts: list[str] | None = None
    sample_terms: list[set[str]] = []
    if read_texts is not None:
        text_rows = text_terms.text_sample(n, text_limit, seed)
        sample_texts = read_texts(text_rows)
        sample_terms = [text_terms.terms_of(t) for t in sample_texts or []]  # once for every region
    for k in range(first, len(member_sets)):
        description = describe_region(
            member_sets[k],
            losses,
            labels,
            predictions,
            columns,
            seed + k,
            n_bootstrap,
            sample_weights=sample_weights,
            metadata_index=index,
        )
        if read_texts is not None and text_rows is not None and sample_texts is not None:
            description.update(
                _text_description(
                    member_sets[k], n, losses, text_rows, sample_texts, sample_terms, read_texts, heldout, text_limit
                )
            )
        yield k, description


def _text_description(
    members: np.ndarray,
    n: int,
    losses: np.ndarray,
    text_rows: np.ndarray,
    sample_texts: list[str],
    sample_terms: list[set[str]],
    read_texts: Callable[[np.ndarray], list[str] | None],
    heldout: np.ndarray | None,
    text_limit: int,
) -> dict[str, Any]:
    """The text items of one region's description (see :func:`iter_job_descriptions`)."""
    idx = np.asarray(members, dtype=np.int64).ravel()
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    member_texts = read_texts(idx[:text_limit]) or []
    found = text_terms.region_text_terms(
        member_texts,
        int(idx.size),
        text_rows,
        sample_texts,
        mask,
        np.asarray(losses),
        heldout,
        sample_terms=sample_terms,
    )
    return {
        "text_terms": found["terms"],
        "text_terms_lift_on": found["lift_on"],
        "text_examples": text_terms.examples(member_texts),
    }


def metadata_sample(n: int, limit: int = METADATA_LIMIT, seed: int = 0) -> np.ndarray | None:
    """None when all n rows' metadata may be read, else `limit` sorted row indices drawn uniformly."""
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)).astype(np.int64)


def significance(
    search_best: Callable[[np.ndarray], float],
    losses: np.ndarray,
    regions: Sequence[Mapping[str, Any]],
    n_permutations: int,
    seed: int = 0,
    *,
    resume: NullSoFar | None = None,
    should_yield: Callable[[], bool] | None = None,
) -> list[float]:
    """p-value of every region (see :func:`permutation_test`), scores from :func:`region_score`.

    `search_best(shuffled_losses)` reruns the job's search with one spotlight on shuffled losses
    and returns ``region_score`` of the region it finds. `resume` and `should_yield`: see
    :func:`permutation_null`.
    """
    observed = [region_score(r) for r in regions]
    return permutation_test(
        search_best, losses, n_permutations, seed, observed=observed, resume=resume, should_yield=should_yield
    )


def metadata_columns(rows: Iterable[Mapping[str, Any] | None], max_fields: int = 20) -> dict[str, list[Any]]:
    """Turn per-row metadata objects into one list per field (a missing key becomes None).

    Only the first `max_fields` field names seen are kept, so one odd row cannot make thousands.
    """
    rows = list(rows)
    names: list[str] = []
    for row in rows:
        for key in row or {}:
            if key not in names and len(names) < max_fields:
                names.append(key)
    return {name: [(row or {}).get(name) for row in rows] for name in names}


# ----- certainty -----
def bootstrap_interval(
    weights: np.ndarray, losses: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile interval of the weighted loss under the Poisson bootstrap.

    Each example is drawn c_i ~ Poisson(1) times and the weighted loss recomputed as
    sum(c_i k_i l_i) / sum(c_i k_i); this equals resampling the n rows with replacement as n grows,
    and needs no pass over examples outside the region. Examples carrying less than
    ``_BOOTSTRAP_TAIL`` of the largest weight are left out (see the module constant).

    Past ``BOOTSTRAP_UNITS`` examples, rows are dealt at random into that many groups and each group
    is drawn as a whole (its sums of k*l and k precomputed) — the grouped Poisson bootstrap that
    large-scale experiment platforms use. Random groups leave the variance of the estimate unbiased,
    and the cost stays O(n + BOOTSTRAP_UNITS * n_bootstrap) instead of O(n * n_bootstrap).
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    loss = np.asarray(losses, dtype=np.float64).ravel()
    keep = w >= w.max() * _BOOTSTRAP_TAIL
    w, loss = w[keep], loss[keep]
    rng = np.random.default_rng(seed)
    wl = w * loss
    full = float(wl.sum() / w.sum())
    if w.size > BOOTSTRAP_UNITS:
        group = rng.integers(0, BOOTSTRAP_UNITS, size=w.size)
        wl = np.bincount(group, weights=wl, minlength=BOOTSTRAP_UNITS).astype(np.float64)
        w = np.bincount(group, weights=w, minlength=BOOTSTRAP_UNITS).astype(np.float64)
    stats = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        b = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
        counts = poisson1(rng, (b, w.size))
        num, den = counts @ wl, counts @ w
        # A resample that drew none of the region (tiny regions only) has no loss; count it as the estimate.
        stats[start : start + b] = np.where(den > 0, num / np.where(den > 0, den, 1.0), full)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return [_finite(float(lo)), _finite(float(hi))]


@dataclass
class NullSoFar:
    """A permutation test stopped between two shuffles: the scores of the shuffles done, in order, and
    the state of the generator that draws the shuffles (numpy's ``bit_generator.state``, a dict of
    ints: JSON as it is), so that the next shuffle is the one an uninterrupted run would draw next."""

    scores: list[float]
    rng_state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"scores": list(self.scores), "rng_state": self.rng_state}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NullSoFar:
        return cls(scores=[float(x) for x in raw["scores"]], rng_state=dict(raw["rng_state"]))


class PermutationsYielded(Exception):
    """`should_yield` said yes between two shuffles; `done` is where the test goes on from."""

    def __init__(self, done: NullSoFar) -> None:
        super().__init__(f"permutation test stopped after {len(done.scores)} shuffles")
        self.done = done


def permutation_null(
    search_fn: Callable[[np.ndarray], float],
    losses: np.ndarray,
    n_permutations: int,
    seed: int = 0,
    *,
    resume: NullSoFar | None = None,
    should_yield: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Scores of the best region found on `n_permutations` shuffles of the losses.

    `search_fn(shuffled_losses) -> float` runs the job's search (same embeddings, same params; one
    spotlight is enough, as the first region is the best one) and returns the best region's score,
    higher meaning more extreme (use :func:`region_score`).

    After each shuffle but the last, ``should_yield()`` (when given) may stop the test: it raises
    :class:`PermutationsYielded` with the scores so far and the generator's state. Called again with
    that as `resume` (same losses, count and seed), it goes on with the next shuffle of the same
    stream, so the scores equal an uninterrupted run's.
    """
    n = int(n_permutations)
    rng = np.random.default_rng(seed)
    base = np.asarray(losses)
    null = np.empty(n)
    start = 0
    if resume is not None:
        start = len(resume.scores)
        if start > n:
            raise ValueError(f"cannot resume a test of {n} shuffles after {start}")
        null[:start] = resume.scores
        rng.bit_generator.state = resume.rng_state
    for i in range(start, n):
        null[i] = float(search_fn(rng.permutation(base)))
        if should_yield is not None and i + 1 < n and should_yield():
            raise PermutationsYielded(NullSoFar(scores=null[: i + 1].tolist(), rng_state=dict(rng.bit_generator.state)))
    return null


def p_values(observed: Sequence[float], null: np.ndarray) -> list[float]:
    """p_j = (1 + #{shuffled runs with best score >= observed_j}) / (1 + N).

    The +1 counts the observed data as one of the permutations, so p is never 0 (the smallest
    reportable value is 1/(N+1)) and the test keeps its level exactly (Phipson & Smyth, 2010).
    Comparing every region with the *best* region of each shuffled run makes the test hold for
    the whole list of regions at once: a region of pure noise rarely beats the best of a search.
    """
    null = np.asarray(null, dtype=np.float64)
    n = null.size
    return [float((1 + int(np.count_nonzero(null >= float(s)))) / (1 + n)) for s in observed]


def permutation_test(
    search_fn: Callable[[np.ndarray], float],
    losses: np.ndarray,
    n_permutations: int,
    seed: int = 0,
    *,
    observed: Sequence[float],
    resume: NullSoFar | None = None,
    should_yield: Callable[[], bool] | None = None,
) -> list[float]:
    """One p-value per region: how often a search on shuffled losses does at least as well.

    See :func:`permutation_null` for `search_fn`, `resume` and `should_yield`, and :func:`p_values`
    for the formula. With ``n_permutations == 0`` nothing runs and every p-value is 1.0 (no evidence
    either way) — callers skip the field instead.
    """
    if n_permutations <= 0:
        return [1.0 for _ in observed]
    null = permutation_null(search_fn, losses, n_permutations, seed, resume=resume, should_yield=should_yield)
    return p_values(observed, null)


def rerun_best(
    search: Callable[..., Any],
    embeddings: np.ndarray,
    params: Any,
    **search_kwargs: Any,
) -> Callable[[np.ndarray], float]:
    """`search_best` for :func:`significance` from the engine's `search` (injected: no torch here).

    Each call reruns ``search(embeddings, shuffled_losses, params', **search_kwargs)`` with
    ``params' = params`` but one spotlight and no permutations (the first region is the best one),
    and returns the score of that region. Pass the job's labels, predictions, sample_weights and
    should_stop as `search_kwargs`; the engine's batched restarts make each rerun cost one region.
    """
    one = params.model_copy(update={"n_spotlights": 1, "n_permutations": 0})

    def best(shuffled: np.ndarray) -> float:
        result = search(embeddings, shuffled, one, **search_kwargs)
        return region_score(result.regions[0].to_dict())

    return best


def region_score(region: Mapping[str, Any]) -> float:
    """The score the permutation test compares: the weighted loss, negated for `min_loss` searches."""
    value = float(region["weighted_loss"])
    return -value if region.get("objective") == "min_loss" else value


# ----- composition helpers -----
def _as_weights(weights: np.ndarray, sample_weights: np.ndarray | None) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).ravel()
    if sample_weights is not None:
        w = w * np.asarray(sample_weights, dtype=np.float64).ravel()
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    return w


def _codes_of_ints(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    arr = np.asarray(values).ravel()
    uniques, codes = np.unique(arr, return_inverse=True)
    return codes, [v.item() if isinstance(v, np.generic) else v for v in uniques]


def _classify(values: Sequence[Any]) -> tuple[str, Any]:
    """'categorical' (codes, names), 'numeric' ((floats, None),) or 'skip' for one metadata field."""
    numeric = True
    index: dict[Any, int] = {}
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None:
            key: Any = MISSING
        elif isinstance(v, (str, bool, int, float)):
            key = v
            if isinstance(v, (str, bool)):
                numeric = False
                if isinstance(v, str) and _URLISH.match(v):
                    return "skip", None  # links and inline images are shown, not counted
        else:
            return "skip", None  # lists, objects: not something to count
        code = index.get(key)
        if code is None:
            code = index[key] = len(index)
            if len(index) > MAX_CATEGORIES and not numeric:
                return "skip", None
        codes[i] = code
    if len(index) <= MAX_CATEGORIES:
        names = [None] * len(index)
        for key, code in index.items():
            names[code] = key
        return "categorical", (codes, names)
    if numeric:
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return "numeric", (arr, None)
    return "skip", None


def _composition(coded: tuple[np.ndarray, list[Any]], w: np.ndarray, overall_w: np.ndarray, top: int) -> dict[str, Any]:
    """Weighted share of each value inside vs overall; the `top` values with the most excess weight."""
    codes, names = coded
    m = len(names)
    inside = np.bincount(codes, weights=w, minlength=m)
    overall = np.bincount(codes, weights=overall_w, minlength=m)
    total_in, total_all = float(inside.sum()), float(overall.sum())
    share_in = inside / total_in if total_in > 0 else np.zeros(m)
    share_all = overall / total_all if total_all > 0 else np.zeros(m)
    excess = inside - share_all * total_in
    order = np.lexsort((np.arange(m), -excess))  # most excess first, ties by first appearance
    values: list[dict[str, Any]] = []
    for j in order[: max(0, top)]:
        if excess[j] <= 0 and values:
            break
        values.append(
            {
                "value": _jsonable(names[j]),
                "count_inside": _finite(float(inside[j])),
                "count_overall": _finite(float(overall[j])),
                "share_inside": _finite(float(share_in[j])),
                "share_overall": _finite(float(share_all[j])),
                "lift": _lift(float(share_in[j]), float(share_all[j])),
                # The item as a rule ("label = v"): of the rows holding v, the share that are
                # members; of the members, the share holding v.
                "precision": _finite(float(inside[j] / overall[j])) if overall[j] > 0 else 0.0,
                "recall": _finite(float(share_in[j])),
            }
        )
    dominant = int(np.argmax(share_in)) if m else None
    return {
        "n_values": m,
        "over_represented": values,
        "dominant": None
        if dominant is None
        else {"value": _jsonable(names[dominant]), "share_inside": _finite(float(share_in[dominant]))},
    }


def _numeric(values: np.ndarray, w: np.ndarray, overall_w: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(values)
    v = np.where(ok, values, 0.0)
    w_in, w_all = w * ok, overall_w * ok
    inside = float(w_in @ v / w_in.sum()) if w_in.sum() > 0 else 0.0
    overall = float(w_all @ v / w_all.sum()) if w_all.sum() > 0 else 0.0
    var = float(w_all @ np.square(v - overall) / w_all.sum()) if w_all.sum() > 0 else 0.0
    return {"inside": _finite(inside), "overall": _finite(overall), "std_overall": _finite(math.sqrt(max(var, 0.0)))}


def _lift(inside: float, overall: float) -> float:
    return _finite(inside / overall) if overall > 0 else 0.0


def _jsonable(value: Any) -> Any:
    """A numpy scalar as plain JSON; a float32 as the decimal it was written as (7.7, not 7.699999809265137)."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8 and np.isfinite(value):
        return float(str(value))  # numpy prints the shortest text that reads back as the same float32
    return value.item() if isinstance(value, np.generic) else value


def _finite(x: float) -> float:
    """Descriptions are JSON: a non-finite number here would be a bug; clamp rather than emit NaN."""
    if math.isfinite(x):
        return x
    return 0.0 if math.isnan(x) else math.copysign(1.7976931348623157e308, x)
