"""A CI gate over regions: ``significant and lift > 2`` parsed into a predicate, never eval'd.

Grammar (case-insensitive keywords)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | compare | flag
    compare := operand OP operand          OP: > >= < <= == !=
    flag    := field                       a yes/no field alone is true when it is yes: ``significant``
    operand := number | field

Fields are a region's numbers (FIELDS below). ``lift``, ``mean_loss`` and ``error_rate`` are the
honest ones, measured on the region's held-out members (the numbers the regions table shows);
``significant`` is the region's verdict, so ``significant and lift > 2`` fails a build only on a
weak spot that is more than noise, and a job with no significant region passes it. The search's
in-sample, kernel-weighted figures are ``weighted_lift`` and ``weighted_loss``. A region without a
value for a field (``permutation_p_value`` without ``n_permutations``) never matches a comparison
that uses it, and the caller is told.
A yes/no field stands alone (``significant``, ``feasible``; on a comparison ``new and significant``:
`parse(text, fields, value, flags)` takes spotlight/contract/compare.py's ``GATE_FIELDS`` and ``GATE_FLAGS``).
Pure Python: the CLI parses the expression before anything is uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FIELDS: dict[str, str] = {
    "significant": "1 when the region's verdict is significant (held-out test at the job's level), else 0",
    "p_value": "the verdict's p-value, Holm-adjusted over the job's regions (significant = p_value <= level)",
    "lift": "held-out members' mean loss over the held-out rows' mean loss (the table's lift; honest)",
    "mean_loss": "held-out members' mean loss (the table's mean loss; honest)",
    "error_rate": "error rate (label != prediction) of the held-out members",
    "error_rate_lift": "error_rate over the dataset's error rate",
    "n_holdout_members": "held-out rows that are members (the verdict's sample size)",
    "weighted_lift": "the search's kernel-weighted lift on the rows it searched (in-sample)",
    "weighted_loss": "the search's kernel-weighted mean loss on the rows it searched (in-sample)",
    "dataset_mean_loss": "the searched rows' mean loss",
    "permutation_p_value": "rerun-the-search p-value (needs params.n_permutations > 0)",
    "total_weight": "sum of the kernel weights over the rows searched",
    "n_members": "rows in the region's member set (spotlight/contract/members.py)",
    "effective_size": "how many examples the region counts (sum of kernel weights)",
    "size_requested": "the size the search asked for",
    "feasible": "1 when the region met the size constraint, else 0",
    "index": "the region's number (0 first)",
}
FLAGS = frozenset({"significant", "feasible"})  # yes/no fields, which stand alone in an expression
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
    """A region's value of one gate field (the region as JSON, spotlight/contract/records.py), or None when it has none."""
    if name == "error_rate_lift":
        raw = region.get("description")
        err = raw.get("error_rate") if isinstance(raw, dict) else None
        overall = err.get("overall") if isinstance(err, dict) else None
        inside = region.get("error_rate")
        ok = isinstance(inside, (int, float)) and isinstance(overall, (int, float)) and overall > 0
        v = inside / overall if ok else None  # type: ignore[operator]
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
    flags: frozenset[str] = FLAGS,
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
        raise GateSyntaxError("the expression is empty; e.g. 'significant and lift > 2'")
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
        nxt = peek()
        if nxt is None or nxt[0] != "op":  # a yes/no field alone: true when it is yes ("significant")
            name = tokens[i - 1][1].lower()
            if tokens[i - 1][0] != "word" or name not in flags:
                raise GateSyntaxError(
                    f"{tokens[i - 1][1]!r} alone is not a condition in {text!r}: compare it (e.g. 'lift > 2'); "
                    f"only {', '.join(sorted(flags))} stand alone"
                )

            def flag(region: Mapping[str, Any], missing: set[str]) -> bool:
                v = left(region, missing)
                return v is not None and v != 0

            return flag
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
