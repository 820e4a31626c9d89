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


def test_in_an_80_column_terminal_every_number_and_failing_row_is_whole() -> None:
    """A laptop's default terminal: numbers, headers' words and top rows' ids are never cut ("membe…")."""
    from spotlight.cli_client import print_regions

    regions = [_region(0, 3.94), _region(1, 2.31)]
    for r in regions:
        r["n_members"] = 1697
        r["effective_size"] = 1696.4
        r["description"]["labels"] = {"top": [{"value": "a-long-class-name", "share_inside": 0.9, "lift": 4.3}]}
    tops = [[{"id": f"row-{k}-{i:05d}"} for i in range(3)] for k in range(2)]
    console = Console(width=80, record=True)
    print_regions(console, "job_1cb22e1f7c2bedec3b7e05c5", regions, tops)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for word in ("region", "members", "lift", "1,697", "1696.4", "3.94", "2.31"):
        assert word in text
    for k in range(2):
        assert f"region {k} top failing rows: row-{k}-00000, row-{k}-00001, row-{k}-00002" in text
    wide = Console(width=160, record=True)
    print_regions(wide, "job_x", regions, tops)
    wide_text = wide.export_text()
    assert "top failing rows" in wide_text and "counts as (Σk)" in wide_text


def test_in_an_80_column_pipe_stands_out_wraps_between_words() -> None:
    """`spotlight regions JOB | less`: the "stands out" text wraps at spaces, never inside a word."""
    from spotlight.cli_client import print_regions
    from spotlight.tables import stands_out

    regions = [_region(0, 3.94), _region(1, 2.31)]
    for r in regions:
        r["n_members"] = 1697
        r["effective_size"] = 1696.4
        r["overlap"] = [{"region": 0, "share": 0.5}]
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
    from spotlight.cli_client import _brief

    uri = "data:image/jpeg;base64," + "A" * 4000
    assert _brief({"img": uri, "caption": "a cat"}) == {"img": "<image/jpeg, 2.9 kB>", "caption": "a cat"}
    assert _brief(None) is None
