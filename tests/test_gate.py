"""The --fail-if expression: precedence, parentheses, missing values, and refusals — without eval."""

from __future__ import annotations

import pytest

from spotlight.client.gate import GateSyntaxError, parse
from tests.records import region_record

# Regions as the API serves them (JSON): `lift`, `mean_loss` and `error_rate` are the held-out members'.
WEAK = region_record(
    0,
    significant=True,
    lift=4.0,
    mean_loss=2.4,
    p_value=0.01,
    error_rate=0.6,
    weighted_loss=2.0,
    weighted_lift=1.5,  # the search's kernel-weighted lift, in-sample: its own name
    feasible=True,
    description={
        "n_members": 10,
        "in_sample_mean_loss": 3.0,
        "dataset_mean_loss": 1.0,
        "in_sample_lift": 5.0,
        "in_sample_mean_loss_ci": None,
        "ci_level": 0.95,
        "n_bootstrap": 0,
        "error_rate": {"inside": 0.7, "overall": 0.15, "lift": 4.7},
    },
).model_dump(mode="json")
MILD = region_record(1, lift=1.2, p_value=0.4, weighted_loss=0.6, weighted_lift=1.1, feasible=False).model_dump(
    mode="json"
)


@pytest.mark.parametrize(
    ("text", "weak", "mild"),
    [
        ("lift > 3 and p_value < 0.05", True, False),
        ("lift > 3 or weighted_loss >= 0.6", True, True),
        ("not lift > 3", False, True),
        ("lift > 5 or lift > 3 and p_value < 0.05", True, False),  # and binds tighter than or
        ("(lift > 5 or lift > 3) and p_value < 0.05", True, False),
        ("feasible == 1", True, False),
        ("error_rate > 0.5 AND error_rate_lift >= 3", True, False),
        ("1e-3 < p_value", True, True),
        ("index != 0", False, True),
    ],
)
def test_expressions_match_the_regions_they_should(text: str, weak: bool, mild: bool) -> None:
    gate = parse(text)
    assert gate.matches(WEAK) is weak and gate.matches(MILD) is mild


def test_a_missing_value_never_matches_and_is_reported() -> None:
    missing: set[str] = set()
    assert parse("permutation_p_value < 0.05").matches(WEAK, missing) is False
    assert missing == {"permutation_p_value"}
    missing.clear()
    assert parse("error_rate > 0.1 or lift > 1").matches(MILD, missing) is True
    assert missing == {"error_rate"}  # every part is evaluated, so every absent field is named


def test_significant_stands_alone_and_a_job_without_a_significant_region_passes() -> None:
    gate = parse("significant and lift > 2")
    assert gate.matches(WEAK) and not gate.matches(MILD)
    noise = [region_record(k, lift=9.0, p_value=0.3).model_dump(mode="json") for k in range(3)]
    assert not any(gate.matches(r) for r in noise)  # high lift, not significant: no false alarm
    assert parse("not significant").matches(MILD) and parse("feasible").matches(WEAK)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lift >",
        "lift >> 3",
        "lift > 3 and",
        "(lift > 3",
        "lift > 3)",
        "__import__('os') > 1",
        "lift > 3; rm -rf /",
        "lfit > 3",
        "lift + 1 > 3",
        "lift",
        "3",
        "significant > ",
    ],
)
def test_anything_else_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(GateSyntaxError):
        parse(text)


def test_lift_is_the_held_out_members_as_the_table_shows_and_the_kernel_one_has_its_own_name() -> None:
    assert parse("lift > 3").matches(WEAK) and not parse("weighted_lift > 3").matches(WEAK)
    assert parse("weighted_lift > 1.4 and mean_loss > 2").matches(WEAK)


def test_the_regions_dataframe_names_each_number_as_the_gate_does() -> None:
    """`job.regions_df()` rows: a column a user copies into --fail-if holds the number the gate tests."""
    from spotlight.client.tables import region_rows

    weak, mild = region_rows([WEAK, MILD])
    assert (weak["lift"], weak["mean_loss"], weak["weighted_lift"]) == (4.0, 2.4, 1.5)
    assert (mild["lift"], mild["mean_loss"], mild["weighted_lift"]) == (1.2, None, 1.1)
    assert weak["feasible"] is True and mild["feasible"] is False and weak["index"] == 0
    assert weak["error_rate"] == 0.6 and weak["significant"] is True and mild["significant"] is False
    assert (weak["verdict"], mild["verdict"]) == ("significant", "not distinguishable from noise")
    for row, region in ((weak, WEAK), (mild, MILD)):
        for column in ("lift", "mean_loss", "weighted_lift", "weighted_loss", "p_value"):
            assert parse(f"{column} > 1").matches(region) is (row[column] is not None and row[column] > 1)
