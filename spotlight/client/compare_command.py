"""`spotlight compare OLD NEW`: a stored comparison as a table or JSON, gated for CI.

    spotlight compare job_PROD job_CANDIDATE [--level 0.05] [--fail-if "new and significant"] [--json]
    spotlight compare job_PROD ds_TONIGHT --fail-if "drift"            (NEW a dataset: drift into the regions)
    spotlight compare job_PROD job_CANDIDATE --report compare.html     (the HTML page, both sides)

Exit codes are the client commands' (spotlight/client/commands.py): 0 done; 1 the gate matched a weak
spot (or region); 2 a usage error (a gate that does not parse) before any request; 3 the server refused
(rows that do not match, a job not finished, another tenant's job: 404).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spotlight.client.commands import EXIT_GATE, EXIT_OK, CliExit, _client, _common, emit_json, guarded, parse_gate


def parse_compare_gate(text: str | None) -> Any:
    from spotlight.contract.compare import GATE_FIELDS, GATE_FLAGS, gate_value

    return parse_gate(text, GATE_FIELDS, gate_value, GATE_FLAGS)


def apply_compare_gate(gate: Any, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which rows (weak spots, or regions of a dataset comparison) cross the gate; each is named on stderr."""
    if gate is None:
        return None
    missing: set[str] = set()
    hits = [k for k, row in enumerate(rows) if gate.matches(row, missing)]
    if missing:
        print(f"--fail-if: no value for {', '.join(sorted(missing))} in some rows (those never match)", file=sys.stderr)
    for k in hits:
        print(f"--fail-if: {_name(rows[k])} matches {gate.text!r}", file=sys.stderr)
    return {"expression": gate.text, "failed": bool(hits), "rows": hits}


def _name(row: dict[str, Any]) -> str:
    if "status" in row:
        return f"weak spot ({row['status']}; old region {row['old_region']}, new region {row['new_region']})"
    return f"region {row['region']}"


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def _ci(low: Any, high: Any) -> str:
    return "" if low is None else f" [{low:.3g}, {high:.3g}]"


def _side(row: dict[str, Any], name: str, selected: bool) -> str:
    """A rank with its interval, or marked selected."""
    return _fmt(row[name]) + ("*" if selected else _ci(row[f"{name}_ci_low"], row[f"{name}_ci_high"]))


def comparison_table(document: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    if document.get("kind") == "jobs":
        r = document["rows"]
        title = (
            f"{document['old_job']} → {document['new_job']}: {r['matched']} rows matched "
            f"({r['only_old']} only old, {r['only_new']} only new) · level {document['level']}"
        )
        table = Table(
            title=title,
            caption="rank: the tested members' mean loss percentile (0.5 a typical row), on the members the "
            "job's search never used; * selected: the losses that chose the members (biased up)",
        )
        columns = ("status", "significant", "old region", "new region", "tested / members", "rank before", "rank after")
        for col in (*columns, "lift before", "lift after"):
            table.add_column(col, justify="left" if col == "status" else "right")
        for row in rows:
            table.add_row(
                row["status"],
                {True: "yes", False: "no", None: "untested"}[row["significant"]],
                _fmt(row["old_region"], "d"),
                _fmt(row["new_region"], "d"),
                f"{row['tested_members']} / {row['members']}",
                _side(row, "rank_before", row["selected_before"]),
                _side(row, "rank_after", row["selected_after"]),
                _fmt(row["lift_before"]) + ("*" if row["selected_before"] else ""),
                _fmt(row["lift_after"]) + ("*" if row["selected_after"] else ""),
            )
        return table
    r = document["rows"]
    table = Table(
        title=f"{document['old_job']} on {document['dataset']}: {r['new']} new rows, {r['original']} original"
    )
    for col in ("region", "share original", "share new", "ratio", "drift", "lift new"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(
            str(row["region"]),
            _fmt(100 * row["share_original"], ".1f") + "%",
            _fmt(100 * row["share_new"], ".1f") + "%" + _ci(row["share_new_ci_low"], row["share_new_ci_high"]),
            _fmt(row["ratio"]) + _ci(row["ratio_ci_low"], row["ratio_ci_high"]),
            "DRIFT" if row["drift"] else "no",
            _fmt(row["lift_new"]),
        )
    return table


@guarded
def cmd_compare(args: argparse.Namespace) -> int:
    gate = parse_compare_gate(args.fail_if)
    if not 0 < args.level < 0.5:
        raise CliExit("--level must be in (0, 0.5)")
    with _client(args) as client:
        if args.new.startswith("ds_"):
            comparison = client.compare(args.old, dataset=args.new, level=args.level)
        else:
            comparison = client.compare(args.old, args.new, level=args.level)
        html = comparison.report() if args.report else None
    if html is not None:
        Path(args.report).write_text(html, encoding="utf-8")
        print(f"wrote {args.report}", file=sys.stderr)
    rows = comparison.rows()
    verdict = apply_compare_gate(gate, rows)
    if args.json:
        emit_json({**comparison.document, **({"gate": verdict} if verdict else {})})
    else:
        from rich.console import Console

        Console().print(comparison_table(comparison.document, rows))
        print(f"comparison {comparison.id}", file=sys.stderr)
    return EXIT_GATE if verdict and verdict["failed"] else EXIT_OK


def register(sub: Any) -> None:
    cp = sub.add_parser(
        "compare",
        help="compare a job with a newer job on the same rows (fixed / still there / worse / new) or with new data (drift)",
    )
    cp.add_argument("old", metavar="OLD", help="the old job (production model), job_…")
    cp.add_argument("new", metavar="NEW", help="the new job (candidate model), job_…; or a dataset of new rows, ds_…")
    cp.add_argument("--level", type=float, default=0.05, help="intervals at 1 - level, tests at level (default 0.05)")
    cp.add_argument(
        "--fail-if",
        default=None,
        metavar="EXPR",
        help="exit 1 when a weak spot matches, e.g. 'new and significant', 'worse', 'drift' "
        "(fields: worse, still_there, fixed, new, significant, lift_before, lift_after, drift, ratio, …)",
    )
    cp.add_argument("--report", default=None, metavar="FILE", help="also write the comparison's HTML page here")
    _common(cp)
    cp.set_defaults(func=cmd_compare)
