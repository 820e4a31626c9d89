"""The CLI's regions table leads with the verdict and says plainly when no weak spot was found."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from spotlight.client.commands import print_regions, regions_table
from spotlight.client.tables import region_rows
from spotlight.contract.records import job_summary
from tests.records import region_record


def _region(index: int, lift: float, significant: bool = False, **fields: Any) -> dict:
    values: dict[str, Any] = {"n_members": 50, "n_holdout_members": 24, "effective_size": 49.6, **fields}
    p_value = 0.001 if significant else 0.4
    return region_record(
        index, significant=significant, p_value=p_value, lift=lift, mean_loss=0.3 * lift, **values
    ).model_dump(mode="json")


def _render(regions: list[dict], summary: str | None = None) -> str:
    console = Console(width=160, record=True)
    print_regions(console, "job_x", regions, None, summary)
    return console.export_text()


def test_a_null_job_says_no_weak_spot_found_and_marks_every_region_as_noise() -> None:
    regions = [_region(0, 3.6), _region(1, 1.0), _region(2, 0.76)]
    summary = job_summary([region_record(r["index"]) for r in regions], 0.05)
    text = _render(regions, summary)
    assert text.startswith("No weak spot found")
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and all("│ noise " in line for line in rows)  # each region, in the verdict column
    assert "noise: not distinguishable from noise" in text


def test_a_significant_region_says_so_and_lift_is_the_number_the_json_and_dataframe_hold() -> None:
    regions = [_region(0, 3.61, significant=True), _region(1, 1.4)]
    text = _render(regions, job_summary([region_record(0, significant=True), region_record(1)], 0.05))
    assert "1 of 2 regions are significant" in text and "significant" in text.splitlines()[0]
    rows = region_rows(regions)
    assert rows[0]["lift"] == regions[0]["lift"] == 3.61 and "3.61" in text  # one lift everywhere
    assert rows[0]["verdict"] == "significant" and rows[1]["verdict"] == "not distinguishable from noise"


def test_in_an_80_column_terminal_every_number_and_failing_row_is_whole() -> None:
    """A laptop's default terminal: numbers, headers' words and top rows' ids are never cut ("membe…")."""
    regions = [_region(0, 3.94, n_members=1697), _region(1, 2.31, n_members=1697)]
    tops = [[{"id": f"row-{k}-{i:05d}"} for i in range(3)] for k in range(2)]
    console = Console(width=80, record=True)
    print_regions(console, "job_1cb22e1f7c2bedec3b7e05c5", regions, tops)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for word in ("region", "members", "lift", "1,697", "3.94", "2.31"):
        assert word in text
    for k in range(2):
        assert f"region {k} top failing rows: row-{k}-00000, row-{k}-00001, row-{k}-00002" in text
    wide = Console(width=160, record=True)
    wide.print(regions_table("job_x", regions, tops))
    wide_text = wide.export_text()
    assert "top failing rows" in wide_text and "verdict" in wide_text


def test_in_an_80_column_pipe_stands_out_wraps_between_words() -> None:
    """`spotlight regions JOB | less`: the "stands out" text wraps at spaces, never inside a word."""
    from spotlight.client.commands import print_regions
    from spotlight.client.tables import stands_out

    regions = [_region(0, 3.94), _region(1, 2.31)]
    for r in regions:
        r["n_members"] = 1697
        r["effective_size"] = 1696.4
        r["overlap"] = [{"region": 0, "share": 0.5}]
        r["description"] = dict(r.get("description") or {})
        r["description"]["labels"] = {"over_represented": [{"value": "automobile-sedan", "lift": 4.3}]}
        r["description"]["predictions"] = {"over_represented": [{"value": "truck-pickup", "lift": 3.1}]}
        r["description"]["metadata"] = {"camera": {"over_represented": [{"value": "dashcam-night", "lift": 2.2}]}}
        r["description"]["error_rate"] = {"inside": 0.41, "outside": 0.08}
    console = Console(width=80, record=True)
    print_regions(console, "job_1cb22e1f7c2bedec3b7e05c5", regions, [[{"id": "row-1"}]] * 2)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    said = stands_out(regions[0]["description"])
    assert said
    for k in range(2):
        assert f"region {k} stands out: {said}" in " ".join(text.split())  # whole words, wrapped at spaces only
    words = set(text.split())
    assert all(word in words for word in said.split()), text


def test_members_table_shows_an_image_as_its_type_and_size() -> None:
    from spotlight.client.commands import _brief

    uri = "data:image/jpeg;base64," + "A" * 4000
    assert _brief({"img": uri, "caption": "a cat"}) == {"img": "<image/jpeg, 2.9 kB>", "caption": "a cat"}
    assert _brief(None) is None
