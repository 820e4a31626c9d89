"""spotlight.text_terms: a region's over-represented terms, each checked as a rule."""

from __future__ import annotations

import numpy as np

from spotlight.text_terms import describe, over_represented, terms_of


def test_terms_are_unigrams_and_bigrams_without_function_words() -> None:
    assert terms_of("The printer is on fire") == {"printer", "fire"}
    assert terms_of("my printer jammed") == {"printer", "jammed", "printer jammed"}


def test_the_members_word_ranks_first_and_is_checked_on_the_held_out_rows() -> None:
    texts = [f"my printer jammed again {i}" for i in range(6)] + [f"lovely weather today {i}" for i in range(14)]
    members = np.array([True] * 5 + [False] * 15)  # one printer text is not a member
    held_texts = ["printer out of toner", "printer offline", "sunny weather", "rainy weather"]
    held_loss = np.array([3.0, 1.0, 0.5, 0.5])
    assert over_represented(texts, members, top=1)[0][0] in {"printer", "jammed", "printer jammed"}
    rules = {r.term: r for r in describe(texts, members, held_texts, held_loss, top=10)}
    printer = rules["printer"]
    assert printer.precision == 5 / 6 and printer.recall == 1.0
    assert printer.held_out_rows == 2 and printer.held_out_lift == 2.0 / 1.25
    assert "weather" not in rules  # said only by non-members
    assert rules["jammed"].held_out_lift is None and rules["jammed"].held_out_rows == 0
