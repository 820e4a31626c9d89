"""The CLI's regions table says plainly when a region is not a weak spot."""

from __future__ import annotations

from rich.console import Console

from spotlight.cli_client import regions_table


def _render(regions: list[dict]) -> str:
    console = Console(width=160, record=True)
    console.print(regions_table("job_x", regions))
    return console.export_text()


def _region(index: int, lift: float) -> dict:
    return {
        "index": index,
        "n_members": 50,
        "effective_size": 49.6,
        "overlap": [],
        "description": {"mean_loss": 0.3 * lift, "lift": lift, "dataset_mean_loss": 0.3},
    }


def test_regions_at_or_below_the_dataset_mean_are_called_out() -> None:
    text = _render([_region(0, 3.6), _region(1, 1.0), _region(2, 0.76)])
    assert "region 1, 2: members' loss at or below the dataset's mean — not a weak spot" in text


def test_no_caption_when_every_region_is_a_weak_spot() -> None:
    assert "not a weak spot" not in _render([_region(0, 3.6), _region(1, 1.4)])
