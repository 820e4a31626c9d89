"""A CI gate over regions: ``lift > 3 and p_value < 0.05`` parsed into a predicate, never eval'd.

Grammar (case-insensitive keywords)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | compare | field
    compare := operand OP operand          OP: > >= < <= == !=
    operand := number | field

A field alone is true when its value is non-zero (``feasible``; on a comparison ``new and
significant``, spotlight/compare.py's ``GATE_FIELDS``: `parse(text, fields, value)` takes another
set of fields and the function that reads them).

Fields are a region's numbers (FIELDS below; ``error_rate`` is the error rate inside the region,
``error_rate_lift`` inside over overall). ``lift`` and ``mean_loss`` are the member set's — the
numbers the regions table shows, what a person calls the region; the search's kernel-weighted
figures are ``weighted_lift`` and ``weighted_loss``. A region without a value for a field (``p_value``
without ``n_permutations``) never matches a comparison that uses it, and the caller is told.
Pure Python: the CLI parses the expression before anything is uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FIELDS: dict[str, str] = {
    "lift": "the members' mean loss over the dataset's mean loss (the table's lift)",
    "mean_loss": "the members' mean loss (the table's mean loss)",
    "weighted_lift": "the kernel-weighted mean loss over the dataset's mean loss",
    "weighted_loss": "kernel-weighted mean loss inside the region",
    "dataset_mean_loss": "the dataset's mean loss",
    "p_value": "permutation p-value (needs params.n_permutations > 0)",
    "total_weight": "sum of the kernel weights (the region's size)",
    "n_members": "rows in the region's member set (spotlight/members.py)",
    "effective_size": "how many examples the region counts (sum of kernel weights)",
    "size_requested": "the size the search asked for",
    "feasible": "1 when the region met the size constraint, else 0",
    "error_rate": "error rate (label != prediction) inside the region",
    "error_rate_lift": "error rate inside over overall",
    "index": "the region's number (0 first)",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op>>=|<=|==|!=|>|<)|(?P<paren>[()])"
    r"|(?P<word>[A-Za-z_][A-Za-z_0-9]*))"
)


class GateSyntaxError(ValueError):
    """The expression does not parse, or names a field regions do not have."""


def region_value(region: Mapping[str, Any], name: str) -> float | None:
    """A region's value of one gate field, or None when the region has none."""
    raw = region.get("description")
    desc: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if name in ("error_rate", "error_rate_lift"):
        err = desc.get("error_rate")
        v = None if not isinstance(err, dict) else err.get("inside" if name == "error_rate" else "lift")
    elif name in ("lift", "mean_loss"):
        v = desc.get(name)
    elif name == "weighted_lift":
        v = region.get("lift")
    elif name == "dataset_mean_loss":
        v = region.get("mean_loss")
    else:
        v = region.get(name)
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    return float(v) if isinstance(v, (int, float)) else None


@dataclass
class Gate:
    """A parsed expression; ``matches(region)`` is True when the region crosses it."""

    text: str
    _pred: Callable[[Mapping[str, Any], set[str]], bool]
    fields: set[str] = field(default_factory=set)

    def matches(self, region: Mapping[str, Any], missing: set[str] | None = None) -> bool:
        """Evaluate on one region; names of fields it lacked are added to `missing`."""
        return self._pred(region, missing if missing is not None else set())


def parse(
    text: str,
    fields: Mapping[str, str] = FIELDS,
    value: Callable[[Mapping[str, Any], str], float | None] = region_value,
) -> Gate:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text_s = text.strip()
    while pos < len(text_s):
        m = _TOKEN.match(text_s, pos)
        if not m or m.end() == pos:
            raise GateSyntaxError(f"cannot read {text_s[pos:]!r} in {text!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text_s) and text_s[pos].isspace():
            pos += 1
    if not tokens:
        raise GateSyntaxError("the expression is empty; e.g. 'lift > 3 and p_value < 0.05'")
    used: set[str] = set()
    read = value
    i = 0

    def peek() -> tuple[str, str] | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise GateSyntaxError(f"{text!r} ends too early")
        i += 1
        return tokens[i - 1]

    def is_word(tok: tuple[str, str] | None, word: str) -> bool:
        return tok is not None and tok[0] == "word" and tok[1].lower() == word

    def operand() -> Callable[[Mapping[str, Any], set[str]], float | None]:
        kind, value = take()
        if kind == "num":
            number = float(value)
            return lambda region, missing: number
        if kind == "word" and value.lower() not in ("and", "or", "not"):
            name = value.lower()
            if name not in fields:
                raise GateSyntaxError(f"unknown field {value!r}; fields: {', '.join(fields)}")
            used.add(name)

            def get(region: Mapping[str, Any], missing: set[str]) -> float | None:
                v = read(region, name)
                if v is None:
                    missing.add(name)
                return v

            return get
        raise GateSyntaxError(f"expected a number or a field, got {value!r} in {text!r}")

    def compare() -> Callable[[Mapping[str, Any], set[str]], bool]:
        left = operand()
        kind, op = take()
        if kind != "op":
            raise GateSyntaxError(f"expected one of {' '.join(_OPS)} after a value, got {op!r} in {text!r}")
        right = operand()
        fn = _OPS[op]

        def pred(region: Mapping[str, Any], missing: set[str]) -> bool:
            a, b = left(region, missing), right(region, missing)
            return a is not None and b is not None and fn(a, b)

        return pred

    def not_() -> Callable[[Mapping[str, Any], set[str]], bool]:
        nonlocal i
        tok = peek()
        if is_word(tok, "not"):
            i += 1
            inner = not_()
            return lambda region, missing: not inner(region, missing)
        if tok == ("paren", "("):
            i += 1
            inner = or_()
            if take() != ("paren", ")"):
                raise GateSyntaxError(f"missing ')' in {text!r}")
            return inner
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok is not None and tok[0] == "word" and (after is None or after[0] != "op"):
            truth = operand()  # a field alone: true when non-zero
            return lambda region, missing: bool(truth(region, missing))
        return compare()

    def and_() -> Callable[[Mapping[str, Any], set[str]], bool]:
        nonlocal i
        parts = [not_()]
        while is_word(peek(), "and"):
            i += 1
            parts.append(not_())
        # a list, not a generator: every part runs, so `missing` names every absent field
        return lambda region, missing: all([p(region, missing) for p in parts])  # noqa: C419

    def or_() -> Callable[[Mapping[str, Any], set[str]], bool]:
        nonlocal i
        parts = [and_()]
        while is_word(peek(), "or"):
            i += 1
            parts.append(and_())
        return lambda region, missing: any([p(region, missing) for p in parts])  # noqa: C419

    pred = or_()
    if i != len(tokens):
        raise GateSyntaxError(f"unexpected {tokens[i][1]!r} in {text!r}")
    return Gate(text, pred, used)
