"""spotlight.server.text_terms: a region's over-represented terms, each checked as a rule."""

from __future__ import annotations

import numpy as np

from spotlight.server.text_terms import over_represented, region_text_terms, terms_of


def test_terms_are_unigrams_and_bigrams_without_function_words() -> None:
    assert terms_of("The printer is on fire") == {"printer", "fire"}
    assert terms_of("my printer jammed") == {"printer", "jammed", "printer jammed"}


def test_the_members_word_ranks_first_and_is_checked_on_the_held_out_rows() -> None:
    texts = [f"my printer jammed again {i}" for i in range(6)] + [f"lovely weather today {i}" for i in range(14)]
    members = np.array([True] * 5 + [False] * 15)  # one printer text is not a member
    held_texts = ["printer out of toner", "printer offline", "sunny weather", "rainy weather"]
    held_loss = np.array([3.0, 1.0, 0.5, 0.5])
    assert over_represented(texts, members, top=1)[0][0] in {"printer", "jammed", "printer jammed"}
    # the 20 searched rows, then the 4 held out (never members); precision is about the searched rows only
    all_texts = texts + held_texts
    n = len(all_texts)
    mask = np.r_[members, np.zeros(4, dtype=bool)]
    heldout = np.r_[np.zeros(20, dtype=bool), np.ones(4, dtype=bool)]
    losses = np.r_[np.ones(20), held_loss]
    member_texts = [t for t, m in zip(texts, members, strict=True) if m]
    found = region_text_terms(member_texts, 5, np.arange(n), all_texts, mask, losses, heldout, top=10)
    assert found["lift_on"] == "heldout"
    rules = {r["term"]: r for r in found["terms"]}
    printer = rules["printer"]
    assert printer["precision"] == 5 / 6 and printer["recall"] == 1.0
    # two held-out rows mention it: too few for a lift (MIN_LIFT_ROWS), counted all the same
    assert printer["lift_rows"] == 2 and printer["lift"] is None
    assert "weather" not in rules  # said only by non-members
    assert rules["jammed"]["lift"] is None and rules["jammed"]["lift_rows"] == 0


def test_a_held_out_lift_is_the_mentioning_rows_mean_loss_over_the_held_out_mean() -> None:
    member_texts = [f"printer jammed {i}" for i in range(5)]
    held = ["printer out of toner"] * 5 + ["sunny weather"] * 5
    texts = member_texts + ["lovely weather"] * 10 + held
    mask = np.r_[np.ones(5, dtype=bool), np.zeros(20, dtype=bool)]
    heldout = np.r_[np.zeros(15, dtype=bool), np.ones(10, dtype=bool)]
    losses = np.r_[np.ones(15), np.full(5, 3.0), np.full(5, 1.0)]
    found = region_text_terms(member_texts, 5, np.arange(25), texts, mask, losses, heldout)
    printer = {r["term"]: r for r in found["terms"]}["printer"]
    assert printer["precision"] == 1.0  # the held-out printer rows do not count against it
    assert printer["lift_rows"] == 5 and printer["lift"] == 3.0 / 2.0
