"""A small synthetic dataset with planted high-loss slices, and the report pieces built from it.

Used by the report tests and to make docs/report.png (`python -m tests.ux.example OUT.html`).
Regions come from a real engine search when torch is importable, else from the planted slices.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from spotlight.contract import verdict
from spotlight.contract.contribution import contributions, order_by_contribution
from spotlight.contract.members import effective_size, overlaps_with_earlier
from spotlight.contract.records import RegionDescription, RegionRecord, job_summary
from worker.describe import describe_regions, metadata_columns
from worker.report import member_rows, render_report

CLASSES = ["cat", "dog", "bird", "frog"]


def planted_dataset(n: int = 3000, d: int = 16, seed: int = 0) -> dict[str, Any]:
    """Four gaussian classes; two small pockets where the model is wrong (high loss)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), size=n)
    means = rng.normal(0, 4, size=(len(CLASSES), d))
    emb = means[labels] + rng.normal(0, 1.5, size=(n, d))
    losses = rng.gamma(2.0, 0.15, size=n)
    preds = labels.copy()
    sources = rng.choice(["web", "studio", "phone"], size=n, p=[0.5, 0.3, 0.2])
    # pocket 1: dogs photographed at night, mistaken for cats
    night = (labels == 1) & (rng.random(n) < 0.25)
    emb[night] += rng.normal(0, 0.4, size=(1, d)) + 6.0 * np.eye(d)[0]
    losses[night] = rng.gamma(6.0, 0.4, size=int(night.sum()))
    preds[night] = 0
    # pocket 2: birds from phones, half wrong
    blur = (labels == 2) & (sources == "phone")
    emb[blur] += 5.0 * np.eye(d)[1]
    losses[blur] = rng.gamma(4.0, 0.35, size=int(blur.sum()))
    flip = blur & (rng.random(n) < 0.5)
    preds[flip] = 3
    metadata = []
    for i in range(n):
        tint = "1e293b" if night[i] else "93c5fd"
        svg = (
            f"<svg xmlns='http://www.w3.org/2000/svg' width='32' height='32'><rect width='32' height='32' "
            f"fill='%23{tint}'/><circle cx='16' cy='16' r='9' fill='%23{'f59e0b' if labels[i] == 1 else 'a3e635'}'/></svg>"
        )
        metadata.append(
            {
                "source": str(sources[i]),
                "time": "night" if night[i] else "day",
                "brightness": float(np.round(0.2 if night[i] else rng.uniform(0.4, 1.0), 3)),
                "thumbnail": "data:image/svg+xml,"
                + svg.replace("<", "%3C")
                .replace(">", "%3E")
                .replace(" ", "%20")
                .replace("'", "%27")
                .replace("=", "%3D")
                .replace("/", "%2F")
                .replace(":", "%3A"),
                "caption": f"a {CLASSES[labels[i]]} <b>#{i}</b>",
            }
        )
    return {
        "embeddings": emb.astype(np.float32),
        "losses": losses.astype(np.float32),
        "labels": labels,
        "predictions": preds,
        "ids": [f"img-{i:05d}" for i in range(n)],
        "metadata": metadata,
        "planted": [night, blur],
    }


def planted_regions(data: dict[str, Any], size: float = 0.02) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Regions centred on the planted pockets (what a perfect search would report), gaussian kernel,
    as region records in JSON (spotlight/contract/records.py), each tested on a random half of the rows."""
    emb = data["embeddings"].astype(np.float64)
    loss = data["losses"].astype(np.float64)
    regions, cols = [], []
    for j, mask in enumerate(data["planted"]):
        c = emb[mask].mean(axis=0)
        d2 = ((emb - c) ** 2).sum(axis=1)
        tau = 1.0 / np.quantile(d2[mask], 0.5)
        w = np.exp(-tau * d2 / 2)
        cols.append(w)
        wl = float(w @ loss / w.sum())
        regions.append(
            {
                "index": j,
                "center": c.tolist(),
                "precision": float(tau),
                "kernel": "gaussian",
                "shape": "spherical",
                "objective": "max_loss",
                "size_requested": size * len(loss),
                "total_weight": float(w.sum()),
                "weighted_loss": wl,
                "mean_loss": float(loss.mean()),
                "lift": wl / float(loss.mean()),
                "feasible": True,
                "steps_run": 300,
                "converged": True,
            }
        )
    weights = np.stack(cols, axis=1).astype(np.float32)
    parts = verdict.split(len(loss), 0)
    return records_of(regions, weights, data, parts), weights


def records_of(
    raw: list[dict[str, Any]], weights: np.ndarray, data: dict[str, Any], parts: verdict.Split
) -> list[dict[str, Any]]:
    """Engine regions (`Region.to_dict()`) as the worker records them: members over every row, the
    held-out verdict (spotlight/contract/verdict.py), the members' place; JSON of `RegionRecord`."""
    rows = [verdict.region_rows(weights[:, k], r.get("kernel", "gaussian"), parts) for k, r in enumerate(raw)]
    sets = [r.all for r in rows]
    wrong = np.asarray(data["labels"]) != np.asarray(data["predictions"])
    figures = [
        verdict.holdout_test(data["losses"], r.held_out, parts.held_out, weights[:, k], wrong=wrong, seed=k)
        for k, r in enumerate(rows)
    ]
    adjusted = verdict.holm([f.p_value for f in figures])
    out = []
    for k, (region, members, overlap) in enumerate(zip(raw, sets, overlaps_with_earlier(sets), strict=True)):
        fig = figures[k]
        place = data["embeddings"][np.sort(members)].astype(np.float64)
        mean = place.mean(axis=0)
        record = RegionRecord.model_validate(
            {
                **{key: v for key, v in region.items() if key not in ("mean_loss", "lift")},
                "weighted_lift": region["lift"],
                "dataset_mean_loss": region["mean_loss"],
                "significant": adjusted[k] is not None and float(adjusted[k] or 1) <= 0.05,
                "p_value": adjusted[k],
                "mean_loss": fig.mean_loss,
                "mean_loss_ci": fig.mean_loss_ci,
                "lift": fig.lift,
                "lift_ci": fig.lift_ci,
                "error_rate": fig.error_rate,
                "n_holdout_members": fig.n_members,
                "verdict": {
                    "method": verdict.METHOD,
                    "level": 0.05,
                    "n_tested": len(raw),
                    "p_value_unadjusted": fig.p_value,
                    "n_holdout_rows": int(parts.held_out.size),
                    "holdout_mean_loss": fig.holdout_mean_loss,
                    "n_draws": fig.n_draws,
                },
                "n_members": int(members.size),
                "effective_size": effective_size(weights[:, k]),
                "overlap": overlap,
                "member_min_weight": rows[k].min_weight,
                "member_mean": mean.tolist(),
                "medoid": int(np.sort(members)[int(np.argmin(((place - mean) ** 2).sum(axis=1)))]),
            }
        )
        out.append(record.model_dump(mode="json"))
    return out


def with_members(regions: list[dict[str, Any]], weights: np.ndarray) -> list[dict[str, Any]]:
    """n_members, effective_size and overlap of hand-made report inputs (the report reads regions as JSON)."""
    sets = members_of(regions, weights)
    for region, members, overlap in zip(regions, sets, overlaps_with_earlier(sets), strict=True):
        region.update(
            n_members=int(members.size), effective_size=effective_size(weights[:, region["index"]]), overlap=overlap
        )
    return regions


def members_of(regions: list[dict[str, Any]], weights: np.ndarray) -> list[np.ndarray]:
    """Each region's member set over every row: the members its record counts."""
    parts = verdict.split(weights.shape[0], 0)
    return [verdict.region_rows(weights[:, k], r.get("kernel", "gaussian"), parts).all for k, r in enumerate(regions)]


def engine_regions(data: dict[str, Any], **params: Any) -> tuple[list[dict[str, Any]], np.ndarray, str, float]:
    """A real search on a random half of the example's rows, its regions tested on the other half."""
    from spotlight.contract.params import SearchParams
    from worker.engine import search

    p = SearchParams(**{"n_spotlights": 3, "spotlight_size": 0.03, "steps": 400, "device": "cpu", **params})
    parts = verdict.split(len(data["losses"]), 0)
    losses, weights = verdict.search_inputs(data["losses"], None, parts)
    kw = {"labels": data["labels"], "predictions": data["predictions"], "sample_weights": weights}
    result = search(data["embeddings"], losses, p, **kw)
    regions = records_of([region.to_dict() for region in result.regions], result.weights, data, parts)
    return regions, result.weights, result.device, result.elapsed_s


def build_report(
    data: dict[str, Any],
    regions: list[dict[str, Any]],
    weights: np.ndarray,
    job_extra: dict[str, Any] | None = None,
    n_bootstrap: int = 200,
) -> str:
    job, descriptions, sets, members = report_inputs(data, regions, weights, job_extra, n_bootstrap)
    return render_report(job, regions, descriptions, data["embeddings"], data["losses"], weights, sets, members)


def report_inputs(
    data: dict[str, Any],
    regions: list[dict[str, Any]],
    weights: np.ndarray,
    job_extra: dict[str, Any] | None = None,
    n_bootstrap: int = 200,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[np.ndarray], list[list[dict[str, Any]]]]:
    """What the report job reads from the stored results: the job, descriptions, member sets and
    each region's top members (by contribution)."""
    cols = metadata_columns(data["metadata"])
    sets = members_of(regions, weights)
    descriptions = [
        RegionDescription.from_describe(d).model_dump(mode="json")
        for d in describe_regions(
            sets, data["losses"], data["labels"], data["predictions"], cols, n_bootstrap=n_bootstrap
        )
    ]
    members = []
    for k, ms in enumerate(sets):
        idx = order_by_contribution(ms, weights[:, k], data["losses"])[:12]
        members.append(
            member_rows(
                idx,
                weights[:, k],
                data["losses"],
                data["labels"],
                data["predictions"],
                [data["ids"][i] for i in idx],
                [data["metadata"][i] for i in idx],
                contribution=contributions(weights[:, k], data["losses"]),
            )
        )
    t0 = datetime(2026, 11, 28, 16, 0, 0, tzinfo=UTC)
    job = {
        "id": "job_0123456789abcdef01234567",
        "status": "finished",
        "dataset": "ds_example",
        "n": len(data["losses"]),
        "dim": data["embeddings"].shape[1],
        "params": {"n_spotlights": len(regions), "spotlight_size": 0.03, "kernel": "gaussian", "steps": 400},
        "verdict": job_summary([RegionRecord.model_validate(r) for r in regions], 0.05),
        "created_at": t0.isoformat(),
        "started_at": (t0 + timedelta(seconds=1.4)).isoformat(),
        "ended_at": (t0 + timedelta(seconds=9.8)).isoformat(),
        "device": "cpu",
        **(job_extra or {}),
    }
    return job, descriptions, sets, members


def main(out: str) -> None:
    data = planted_dataset()
    try:
        regions, weights, device, elapsed = engine_regions(data)
        extra = {"device": device}
    except ImportError:
        regions, weights = planted_regions(data)
        extra = {}
    with open(out, "w", encoding="utf-8") as f:
        f.write(build_report(data, regions, weights, extra))
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "report.html")
