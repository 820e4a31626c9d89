"""Region records for tests, built with the contract's model (spotlight/contract/records.py), never by hand."""

from __future__ import annotations

from typing import Any

from spotlight.contract.records import RegionRecord, RegionsDocument, document


def region_record(index: int = 0, **fields: Any) -> RegionRecord:
    """A valid region: a small gaussian region of 3-d embeddings, not significant; `fields` override."""
    values: dict[str, Any] = {
        "index": index,
        "center": [0.0, 0.0, 0.0],
        "precision": 1.0,
        "kernel": "gaussian",
        "shape": "spherical",
        "objective": "max_loss",
        "weighted_loss": 1.0,
        "weighted_lift": 1.0,
        "dataset_mean_loss": 1.0,
        "size_requested": 10.0,
        "total_weight": 10.0,
        "feasible": True,
        "steps_run": 10,
        "converged": True,
        "n_members": 10,
        "effective_size": 10.0,
        "overlap": [],
        "member_min_weight": 0.5,
    }
    values.update(fields)
    return RegionRecord.model_validate(values)


def regions_document(
    regions: list[RegionRecord], level: float = 0.05, objective: str = "max_loss", loss_reference: float = 0.0
) -> RegionsDocument:
    """regions.json as the worker writes it."""
    return document(regions, level, objective, loss_reference)
