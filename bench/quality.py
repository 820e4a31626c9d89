"""Quality benchmark: planted error slices on real data (scikit-learn's handwritten digits).

    python -m bench.quality                  # all four parts (~25 min on 2 cores)
    python -m bench.quality --quick          # fewer authors' steps, smaller high-dimension data: a smoke test
    python -m bench.quality --part multi     # one part: single, multi, highdim or clusters
    python -m bench.quality --part real      # real texts, real pretrained encoders (bench/real.py; the bench extra)

For each setting a small torch MLP is trained on a training split in which one subgroup is made
hard on purpose; the spotlight then runs on the *held-out* split's penultimate-layer embeddings and
per-example losses. Each method's best of 5 regions is scored against the planted slice with
average precision (AP) and precision@10/25, as in the Domino/dcbench evaluation.

Rows: this engine with both kernels (default parameters otherwise) and the authors' optimiser
(`bench.authors_spotlight`: origin start, tau 1e-4, lr 1e-2, 5000 steps, final iterate), each scored
by a region's weight and by its contribution, weight x (loss - min loss) (the order of the API's
`order=contribution` and of the report); ranking by loss alone; and two oracles: ranking by distance
to the planted slice's own centroid, and a gaussian of that distance times loss (the contribution
of an ideal spherical region). A goals block after the table checks the issue's goals.

Then, in the same run, the multi-mode setting (three problems planted in one model; coverage and
redundancy of the 5 regions, against a Domino-style mixture slicer), planted slices in high
dimension, and the clustered clouds (ten gaussian classes, d = 16-256) with the neighbourhood
dimension k that kernel="auto" decides on, printed for every part's data (`bench.quality_modes`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from bench import authors_spotlight, quality_modes
from bench.digits import augmented_digits, train_mlp
from spotlight.contract.contribution import contributions
from spotlight.contract.params import SearchParams
from worker.engine import search

N_REGIONS = 5


@dataclass
class Setting:
    name: str
    description: str
    x_test: np.ndarray  # held-out embeddings
    loss_test: np.ndarray
    slice_test: np.ndarray  # bool: the planted slice
    labels_test: np.ndarray  # the held-out rows' labels (what a job's `labels` array holds)
    predictions_test: np.ndarray  # the model's predicted class of each held-out row


def _held_out(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out embeddings, losses and predicted classes."""
    with torch.no_grad():
        xt = torch.from_numpy(x)
        emb = model[0](xt)
        logits = model[1](emb)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).long(), reduction="none")
    return emb.numpy(), loss.numpy(), logits.argmax(1).numpy()


def build_settings(seed: int = 0) -> list[Setting]:
    """Three planted slices, each from its own model trained on a deliberately corrupted split."""
    x, y, ids = augmented_digits(seed)
    rng = np.random.default_rng(seed)
    test_ids = rng.permutation(ids.max() + 1)[: (ids.max() + 1) // 2]
    is_test = np.isin(ids, test_ids)
    x_tr, y_tr, x_te, y_te = x[~is_test], y[~is_test].copy(), x[is_test], y[is_test]
    ink_tr, ink_te = x_tr.sum(1), x_te.sum(1)
    settings = []

    # 1. Rare subgroup: 97 % of the training 8s removed.
    keep = (y_tr != 8) | (rng.random(len(y_tr)) < 0.03)
    model = train_mlp(x_tr[keep], y_tr[keep], seed)
    emb, loss, pred = _held_out(model, x_te, y_te)
    settings.append(Setting("rare", "class 8 nearly absent from training (3 % kept)", emb, loss, y_te == 8, y_te, pred))

    # 2. Noisy labels inside one class: 60 % of the training 5s relabelled at random.
    y_noisy = y_tr.copy()
    flip = (y_tr == 5) & (rng.random(len(y_tr)) < 0.6)
    y_noisy[flip] = rng.integers(0, 10, size=int(flip.sum()))
    model = train_mlp(x_tr, y_noisy, seed + 1)
    emb, loss, pred = _held_out(model, x_te, y_te)
    settings.append(Setting("noisy", "60 % of training 5s given random labels", emb, loss, y_te == 5, y_te, pred))

    # 3. Sub-class by an input attribute: heavy-ink 7s (top 40 % of the class's ink) relabelled as 1.
    cut = np.quantile(ink_tr[y_tr == 7], 0.6)
    y_sub = y_tr.copy()
    y_sub[(y_tr == 7) & (ink_tr > cut)] = 1
    model = train_mlp(x_tr, y_sub, seed + 2)
    emb, loss, pred = _held_out(model, x_te, y_te)
    heavy = (y_te == 7) & (ink_te > cut)
    settings.append(Setting("ink", "heavy-ink 7s relabelled 1 in training", emb, loss, heavy, y_te, pred))
    return settings


def _scores(truth: np.ndarray, ranking: np.ndarray) -> tuple[float, float, float]:
    """AP, precision@10, precision@25 of one ranking score (higher = more in the slice); NaN -> lowest."""
    r = np.nan_to_num(ranking.astype(np.float64), nan=-np.inf)
    r = np.where(np.isfinite(r), r, np.nanmin(np.where(np.isfinite(r), r, np.inf)) - 1 if np.isfinite(r).any() else 0.0)
    order = np.argsort(-r, kind="stable")
    return (float(average_precision_score(truth, r)), float(truth[order[:10]].mean()), float(truth[order[:25]].mean()))


def _best_of(truth: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """The best region (by AP) of several, as dcbench scores a slicer."""
    return max((_scores(truth, weights[:, j]) for j in range(weights.shape[1])), key=lambda s: s[0])


def evaluate(settings: list[Setting], authors_steps: int, variants: dict[str, dict] | None = None) -> list[dict]:
    """Every method on every setting. Region methods are scored twice: by weight (kernel value) and by
    contribution, weight x (loss - min loss) (spotlight/contract/contribution.py), the order the API's
    `order=contribution` and the report list members in."""
    rows = []
    params = SearchParams(n_spotlights=N_REGIONS, device="cpu")
    variants = SINGLE_VARIANTS if variants is None else variants

    def both(s: Setting, method: str, weights: np.ndarray, nan: int, seconds: float) -> None:
        rows.append(
            dict(
                setting=s.name,
                method=f"{method} · weight",
                scores=_best_of(s.slice_test, weights),
                nan=nan,
                seconds=seconds,
            )
        )
        rows.append(
            dict(
                setting=s.name,
                method=f"{method} · contribution",
                nan=nan,
                seconds=0.0,
                scores=_best_of(s.slice_test, contributions(np.nan_to_num(weights), s.loss_test)),
            )
        )

    for s in settings:
        size = params.size_count(len(s.loss_test))
        for name, update in variants.items():
            t = time.perf_counter()
            res = search(
                s.x_test,
                s.loss_test,
                params.model_copy(update=update),
                labels=s.labels_test,
                predictions=s.predictions_test,
            )
            both(s, name, res.weights, int(not np.all(np.isfinite(res.weights))), time.perf_counter() - t)
        if authors_steps > 0:  # 0: a tuning run without the (slow) authors' optimiser
            t = time.perf_counter()
            w, nan = authors_spotlight.run(s.x_test, s.loss_test, size, N_REGIONS, steps=authors_steps)
            both(s, "authors (flat, 5000 st.)", w, nan, time.perf_counter() - t)
        rows.append(
            dict(setting=s.name, method="loss ranking", scores=_scores(s.slice_test, s.loss_test), nan=0, seconds=0.0)
        )
        sq = ((s.x_test - s.x_test[s.slice_test].mean(0)) ** 2).sum(1)
        rows.append(
            dict(setting=s.name, method="oracle · distance", scores=_scores(s.slice_test, -sq), nan=0, seconds=0.0)
        )
        # like with like for the rows that use label evidence: the distance to the slice's centroid in the
        # space they search (standardised embeddings plus one-hot labels scaled by sqrt(d), evidence weight 1)
        centred = s.x_test - s.x_test.mean(0)
        z = centred / np.sqrt((centred**2).sum(1).mean() / centred.shape[1])
        aug = np.hstack([z, np.sqrt(z.shape[1]) * np.eye(int(s.labels_test.max()) + 1)[s.labels_test]])
        sq_labels = ((aug - aug[s.slice_test].mean(0)) ** 2).sum(1)
        rows.append(
            dict(
                setting=s.name,
                method="oracle · distance, with labels",
                scores=_scores(s.slice_test, -sq_labels),
                nan=0,
                seconds=0.0,
            )
        )
        # like with like for contributions: a gaussian of the distance to the slice centroid (bandwidth:
        # the median squared distance), times loss
        kernel = np.exp(-0.5 * sq / max(float(np.median(sq)), 1e-12))
        rows.append(
            dict(
                setting=s.name,
                method="oracle · contribution",
                nan=0,
                seconds=0.0,
                scores=_scores(s.slice_test, contributions(kernel, s.loss_test)),
            )
        )
    return rows


def print_table(settings: list[Setting], rows: list[dict]) -> None:
    print(
        f"# bench.quality — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    for s in settings:
        print(
            f"# {s.name}: {s.description}; held-out n={len(s.loss_test)}, d={s.x_test.shape[1]}, "
            f"slice={int(s.slice_test.sum())} ({s.slice_test.mean():.1%}), "
            f"mean loss slice {s.loss_test[s.slice_test].mean():.2f} vs rest {s.loss_test[~s.slice_test].mean():.2f}"
        )
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = [s.name for s in settings]
    head = (
        f"{'method':44s}"
        + "".join(f" | {n:>17s}" for n in names)
        + " |  mean AP | / oracle d. | / oracle c. | NaN | time s"
    )
    print(head)
    print(
        f"{'':44s}"
        + "".join(f" | {'AP   P@10  P@25':>17s}" for _ in names)
        + " |          |             |             |     |"
    )
    print("-" * len(head))
    ap = {(r["method"], r["setting"]): r["scores"][0] for r in rows}
    mean_ap = {m: float(np.mean([ap[(m, n)] for n in names])) for m in methods}
    oracle_d, oracle_c = mean_ap["oracle · distance"], mean_ap["oracle · contribution"]
    for m in methods:
        mine = [next(r for r in rows if r["method"] == m and r["setting"] == n) for n in names]
        cells = "".join(f" | {r['scores'][0]:.3f} {r['scores'][1]:.2f} {r['scores'][2]:.2f}" for r in mine)
        nan = sum(r["nan"] for r in mine)
        secs = sum(r["seconds"] for r in mine)
        print(
            f"{m:44s}{cells} | {mean_ap[m]:8.3f} | {mean_ap[m] / oracle_d:11.1%} | {mean_ap[m] / oracle_c:11.1%} "
            f"| {nan:3d} | {secs:6.1f}"
        )
    if ("engine auto (default) · contribution", names[0]) in ap:  # absent when --only left the default out
        print_goals(names, ap, mean_ap, rows)


def print_goals(names: list[str], ap: dict, mean_ap: dict, rows: list[dict]) -> None:
    """The issue's goals, checked on this run's numbers, for the product's ranking (the default, by contribution)."""
    product, authors = (
        "engine auto (default) · contribution",
        ("authors (flat, 5000 st.) · weight", "authors (flat, 5000 st.) · contribution"),
    )
    beats_loss = all(ap[(product, n)] > ap[("loss ranking", n)] for n in names)
    beats_authors = all(ap[(product, n)] > max(ap[(a, n)] for a in authors) for n in names)
    nan = sum(r["nan"] for r in rows if r["method"].startswith("engine"))
    print(f"# goals for '{product}' (the order of the API's order=contribution and of the report):")
    versus = ", ".join(f"{n} {ap[(product, n)]:.3f} vs {ap[('loss ranking', n)]:.3f}" for n in names)
    print(f"#   beats loss ranking on every setting: {'yes' if beats_loss else 'NO'} ({versus})")
    print(f"#   beats the authors' best scoring on every setting: {'yes' if beats_authors else 'NO'}")
    print(
        f"#   mean AP vs oracle: {mean_ap[product] / mean_ap['oracle · distance']:.1%} of 'oracle · distance', "
        f"{mean_ap[product] / mean_ap['oracle · contribution']:.1%} of 'oracle · contribution' (goal >= 95 %)"
    )
    with_labels = mean_ap["oracle · distance, with labels"]
    print(
        f"#   like with like (the oracle that sees the labels the default uses as evidence): "
        f"{mean_ap[product] / with_labels:.1%} of 'oracle · distance, with labels'; by weight "
        f"{mean_ap['engine auto (default) · weight'] / with_labels:.1%}"
    )
    print(f"#   NaN regions returned by the engine: {nan}")
    weight_row = "engine auto (default) · weight"
    wins = ", ".join(n for n in names if ap[(weight_row, n)] > ap[("loss ranking", n)]) or "no setting"
    print(
        f"# by weight alone ('{weight_row}'): {mean_ap[weight_row] / mean_ap['oracle · distance']:.1%} of "
        f"'oracle · distance'; beats loss ranking on: {wins}"
    )


# Every engine row gets the setting's labels and predictions, as a job with them would; the defaults use
# them as evidence (evidence_weight 1, one-hot labels) when the evidence check keeps it, "no evidence" rows
# search embedding space alone, "evidence unchecked" rows keep the evidence without the check.
SINGLE_VARIANTS = {
    "engine auto (default)": {},
    "engine auto, evidence unchecked": {"evidence_check": False},
    "engine flat": {"kernel": "flat"},
    "engine gaussian": {"kernel": "gaussian"},
    "engine gaussian, no evidence": {"kernel": "gaussian", "evidence_weight": 0.0},
    "engine gaussian, evidence labels+predictions": {"kernel": "gaussian", "evidence": "labels_predictions"},
    "engine gaussian, no evidence, deflation paper": {
        "kernel": "gaussian",
        "evidence_weight": 0.0,
        "deflation": "paper",
    },
    "engine ball": {"kernel": "ball"},
    "engine ball, no evidence": {"kernel": "ball", "evidence_weight": 0.0},
}
MULTI_VARIANTS = {
    "engine (default: auto kernel, evidence labels checked, tails)": {},
    "engine, evidence unchecked": {"evidence_check": False},
    "engine gaussian": {"kernel": "gaussian"},
    "engine, evidence weight 0.5": {"evidence_weight": 0.5},
    "engine, evidence weight 2": {"evidence_weight": 2.0},
    "engine, evidence labels+predictions": {"evidence": "labels_predictions"},
    "engine, evidence mismatch": {"evidence": "mismatch"},
    "engine, no evidence": {"evidence_weight": 0.0},
    "engine, no evidence, deflation paper": {"evidence_weight": 0.0, "deflation": "paper"},
    "engine ball": {"kernel": "ball"},
    "engine ball, no evidence": {"kernel": "ball", "evidence_weight": 0.0},
}
CROSSCLASS_VARIANTS = {
    "engine (default: evidence labels, checked)": {},
    "engine, evidence unchecked": {"evidence_check": False},
    "engine, evidence weight 0.5": {"evidence_weight": 0.5},
    "engine, evidence mismatch": {"evidence": "mismatch"},
    "engine, no evidence": {"evidence_weight": 0.0},
}
HIGHDIM_VARIANTS = {
    "engine auto (default)": {},
    "engine gaussian": {"kernel": "gaussian"},
    "engine flat": {"kernel": "flat"},
    "engine ball": {"kernel": "ball"},
}
# Over several draws of each high-dimension problem: the default, and the ball as it was before the
# classifier refits (bench/quality_modes.py's ENGINE_TUNINGS).
HIGHDIM_DRAW_VARIANTS = {
    "engine auto (default)": {},
    "engine ball, refits off": {"kernel": "ball", "constants": "refits off"},
}


# The clustered clouds (`bench.quality_modes.clusters_problem`): what auto runs against both kernels.
CLUSTERS_VARIANTS: dict[str, dict] = {"engine gaussian": {"kernel": "gaussian"}, "engine ball": {"kernel": "ball"}}


def clusters_part(seed: int) -> None:
    """kernel="auto"'s decision everywhere in one run: k and the kernel it picks on every benchmark's
    data (digits single- and multi-mode, the cross-class clouds, the high-dimension clouds,
    `bench.speed`'s data), then both kernels on the clustered clouds (auto runs the one printed as
    its pick, with identical weights: tests/engine/test_auto_kernel.py) and on the cross-class clouds."""
    from bench.speed import make_data

    quality_modes.print_dimension({f"digits {s.name}": s.x_test for s in build_settings(seed)})
    mm = quality_modes.build_multimode(seed)
    crossclass = {f"cross-class seed {i}": quality_modes.crossclass_problem(i)[0] for i in (0, 1, 2)}
    quality_modes.print_dimension({"digits multi-mode": mm.x, **crossclass})
    quality_modes.print_dimension(
        {
            f"high-dim d={d} {kind}": quality_modes.highdim_problem(20_000, d, kind, d)[0]
            for d in (256, 512)
            for kind in ("ball", "cap")
        }
    )
    quality_modes.print_dimension({"bench.speed 50000 x 512": make_data(50_000, 512)[0]})
    quality_modes.print_clusters(quality_modes.run_clusters(CLUSTERS_VARIANTS, [16, 32, 64, 128, 256]))
    quality_modes.print_crossclass(quality_modes.run_crossclass(CLUSTERS_VARIANTS))


def _only(variants: dict[str, dict], only: str | None) -> dict[str, dict]:
    """The variants whose name contains `only` (all when None): one method while iterating."""
    return variants if only is None else {k: v for k, v in variants.items() if only in k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="500 authors' steps, n = 5000 in high dimension (smoke test only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=["all", "single", "multi", "highdim", "clusters", "real"], default="all")
    parser.add_argument("--only", help="run only the engine variants whose name contains this (while iterating)")
    args = parser.parse_args()
    if args.part in ("all", "single"):
        settings = build_settings(args.seed)
        quality_modes.print_dimension({s.name: s.x_test for s in settings})
        rows = evaluate(settings, authors_steps=500 if args.quick else 5000, variants=_only(SINGLE_VARIANTS, args.only))
        print_table(settings, rows)
    if args.part in ("all", "multi"):
        mm = quality_modes.build_multimode(args.seed)
        crossclass = {f"cross-class seed {i}": quality_modes.crossclass_problem(i)[0] for i in (0, 1, 2)}
        quality_modes.print_dimension({"multi-mode": mm.x, **crossclass})
        quality_modes.print_multimode(mm, quality_modes.run_multimode(mm, _only(MULTI_VARIANTS, args.only)))
        if args.only is None:
            quality_modes.print_seeds(quality_modes.run_seeds(mm))
            quality_modes.print_crossclass(quality_modes.run_crossclass(CROSSCLASS_VARIANTS))
    if args.part in ("all", "highdim"):
        n = 5000 if args.quick else 20_000
        quality_modes.print_highdim(quality_modes.run_highdim(_only(HIGHDIM_VARIANTS, args.only), n, [256, 512]), n)
        draws = quality_modes.run_highdim_draws(_only(HIGHDIM_DRAW_VARIANTS, args.only), n, [256, 512])
        quality_modes.print_highdim_draws(draws, n)
    if args.part in ("all", "clusters"):
        clusters_part(args.seed)
    if args.part == "real":  # needs the bench extra and Debian's fortunes (bench/real.py); not part of "all"
        from bench import real

        real.main(seed=args.seed, only=args.only)


if __name__ == "__main__":
    main()
