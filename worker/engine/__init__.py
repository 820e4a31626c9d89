"""The spotlight search engine: a pure function of arrays and parameters (no Redis, no files).

Interface (fixed; the RQ task, the benchmarks and the describe step program against it)::

    from worker.engine import search, SearchResult, Region, SearchCanceled, SearchResume, SearchYielded

    result = search(
        embeddings,                 # np.ndarray | torch.Tensor, n x d, any float dtype (float32 used)
        losses,                     # np.ndarray n, or None when logits + labels are given
        params,                     # spotlight.contract.params.SearchParams
        *,
        logits=None,                # n x c, with labels: losses = cross-entropy
        labels=None,                # n ints (label evidence, evidence_weight; label_entropy_coeff)
        predictions=None,           # n ints (evidence 'labels_predictions'/'mismatch'; prediction_entropy_coeff)
        sample_weights=None,        # n non-negative floats (the authors' `counts`)
        progress=None,              # callable(spotlight: int, step: int, steps: int) -> None, 0-based spotlight
        should_stop=None,           # callable() -> bool, polled between steps; True raises SearchCanceled
        should_yield=None,          # callable() -> bool, polled between regions; True raises SearchYielded
        resume=None,                # SearchResume of a yielded search: go on from its regions
    ) -> SearchResult

Nothing in a SearchResult is ever NaN or inf.
"""

from worker.engine.result import Region, SearchCanceled, SearchResult, SearchResume, SearchYielded
from worker.engine.search import search

__all__ = ["Region", "SearchCanceled", "SearchResult", "SearchResume", "SearchYielded", "search"]
