"""The `spotlight` client commands, for people and for pipelines: submit, status, regions, members, report, cancel.

    spotlight submit EMB.npy LOSSES.npy [--labels L.npy] [--predictions P.npy] [--texts T.txt]
    spotlight submit data.parquet|data.npz [--column embeddings=emb ...]
    spotlight submit s3://bucket/data.parquet | file:///root/data.npz | ds_…    (read by the server / stored)
        [--param k=v ...] [--wait] [--top N] [--fail-if EXPR] [--json]
    spotlight status JOB | regions JOB | members JOB K | report JOB [-o FILE] [--wait S] | cancel JOB  [--json]

Every command takes ``--server`` (``$SPOTLIGHT_SERVER``) and ``--api-key`` (``$SPOTLIGHT_API_KEY``).
With ``--json`` the answer is one JSON document on stdout (errors too: ``{"error": {...}}``);
progress and logs always go to stderr, so ``spotlight regions JOB --json | jq`` works.

Exit codes (EXIT_* below): 0 done; 1 the ``--fail-if`` gate matched a region, or the job failed or
was canceled; 2 a usage error found before any request (bad file, parameter, column or gate);
3 the server refused or could not be reached; 4 ``--wait`` ran out of time (the job goes on).

Imports only the client (numpy, httpx) at import time; rich and pydantic are imported by the
commands that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_SERVER, EXIT_TIMEOUT = 0, 1, 2, 3, 4
URI_SCHEMES = ("file://", "s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://", "memory://")


class CliExit(SystemExit):
    """Ends a client command with an exit code and a message (str(exc) is the message)."""

    def __init__(self, message: str, code: int = EXIT_USAGE, error_code: str = "usage_error") -> None:
        super().__init__(code)
        self.message = message
        self.error_code = error_code

    def __str__(self) -> str:
        return self.message


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` with value parsed as JSON when it is JSON (200, 0.05, "cpu"), else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param wants key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_column(text: str) -> tuple[str, str]:
    """``field=column`` for --column (e.g. embeddings=emb)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--column wants field=column (e.g. embeddings=emb), got {text!r}")
    field, column = (s.strip() for s in text.split("=", 1))
    return field, column


# ----- output -----
def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


TEXT_COLUMNS = ("shares with", "stands out", "top failing rows")
TEXT_MIN_WIDTH = 10
WIDE_TABLE = 110  # columns of terminal that fit the table with its top-failing-rows column


def regions_table(
    job_id: str,
    regions: list[dict[str, Any]],
    tops: list[list[dict[str, Any]]] | None = None,
    narrow: bool = False,
    summary: str | None = None,
) -> Any:
    """The regions as a rich table (each region as JSON, spotlight/contract/records.py), verdict first.

    Per region: its verdict ('significant' or 'not distinguishable from noise', spotlight/client/tables.py)
    and Holm-adjusted p-value, its members (held-out members in brackets: the rows its figures rest
    on), the held-out members' mean loss and lift over the held-out rows' mean (honest: the search
    never saw those rows), their error rate when labels and predictions were given, the largest share
    of its members an earlier region already holds, what stands out among them (class names when the
    dataset has them; with texts, the over-represented words as "term" P precision R recall xlift),
    and with `tops` its top members by contribution (their ids, else rows). The job's verdict (`summary`, e.g. "No weak
    spot found: …") is printed above it by :func:`print_regions`, so a null job says so where the eye
    lands. `narrow` (a terminal under WIDE_TABLE columns): headers wrap at words, the table has no
    outer edge, and what stands out is left to `print_regions`, which writes it below the table.
    """
    from rich.table import Table

    from spotlight.client.tables import NOISE

    with_errors = any(isinstance(r.get("error_rate"), (int, float)) for r in regions)
    title = f"{job_id}: {len(regions)} regions"
    cols = ["region", "verdict", "p-value", "members (held out)", "mean loss", "lift"]
    cols += (["error rate"] if with_errors else []) + ["shares with"] + ([] if narrow else ["stands out"])
    cols += ["top failing rows"] if tops is not None else []
    rows = []
    for j, reg in enumerate(regions):
        row = [
            str(reg["index"]),
            "significant" if reg.get("significant") is True else "noise",
            _fmt(reg.get("p_value"), ".2g"),
            f"{_fmt(reg.get('n_members'), ',')} ({_fmt(reg.get('n_holdout_members'), ',')})",
            _fmt(reg.get("mean_loss"), ".4g"),
            _fmt(reg.get("lift"), ".3g"),
        ]
        if with_errors:
            err = reg.get("error_rate")
            row.append(_fmt(100 * err, ".1f") + "%" if isinstance(err, (int, float)) else "—")
        row += [_most_shared(reg.get("overlap"))] + ([] if narrow else [_said(_description(reg))])
        if tops is not None:
            row.append(", ".join(str(m["id"] if m.get("id") is not None else m["index"]) for m in tops[j]))
        rows.append(row)
    caption = (
        f"noise: {NOISE}. mean loss and lift: the region's held-out members (rows the search never saw) "
        "against all held-out rows."
        if regions
        else None
    )
    table = Table(title=title, caption=caption, show_edge=not narrow, pad_edge=not narrow)
    for i, col in enumerate(cols):
        # A number is never cut: its column is as wide as its widest value and its header (in a narrow
        # terminal, the header's longest word: headers wrap); the text columns take the rest and wrap.
        header = max(len(w) for w in col.split()) if narrow else len(col)
        if col in TEXT_COLUMNS:
            table.add_column(col, justify="left", overflow="fold", min_width=max(header, TEXT_MIN_WIDTH))
        else:
            width = max([header] + [len(r[i]) for r in rows])
            table.add_column(col, justify="left" if col == "verdict" else "right", width=width)
    for row in rows:
        table.add_row(*row)
    return table


def print_regions(
    console: Any,
    job_id: str,
    regions: list[dict[str, Any]],
    tops: list[list[dict[str, Any]]] | None,
    summary: str | None = None,
) -> None:
    """The job's verdict, then the regions table; in a terminal narrower than WIDE_TABLE the top failing
    rows follow it, one line per region, instead of squeezing every column into an unreadable sliver."""
    if summary:
        console.print(summary, style="bold")
    if console.width >= WIDE_TABLE:
        console.print(regions_table(job_id, regions, tops, summary=summary))
        return
    console.print(regions_table(job_id, regions, narrow=True, summary=summary))
    # what stands out is words: below the table, one line per region, they wrap between words
    for reg in regions:
        said = _said(_description(reg))
        if said:
            console.print(f"region {reg['index']} stands out: {said}")
    if tops is None:
        return
    for reg, top in zip(regions, tops, strict=True):
        rows = ", ".join(str(m["id"] if m.get("id") is not None else m["index"]) for m in top)
        console.print(f"region {reg['index']} top failing rows: {rows or '—'}", overflow="fold")


def _said(desc: dict[str, Any]) -> str:
    """What stands out among a region's members, with its texts' over-represented words (two)."""
    from spotlight.client.tables import stands_out, text_terms

    words = text_terms(desc, limit=2)
    return "; ".join(p for p in (stands_out(desc), f"text: {words}" if words else "") if p)


def _description(region: dict[str, Any]) -> dict[str, Any]:
    found = region.get("description")
    return found if isinstance(found, dict) else {}


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _most_shared(overlap: Any) -> str:
    """The earlier region holding the largest share of this region's members, e.g. '#0: 86%'."""
    shares = [o for o in overlap or [] if isinstance(o, dict) and isinstance(o.get("share"), (int, float))]
    if not shares:
        return "—"
    top = max(shares, key=lambda o: o["share"])
    return f"#{top['region']}: {100 * top['share']:.0f}%" if top["share"] > 0 else "none"


# ----- the gate -----
def parse_gate(text: str | None, *fields_value_flags: Any) -> Any:
    """`--fail-if` parsed (spotlight/client/gate.py); a bad expression ends the command before anything is sent.
    `fields_value_flags`: another field set for `gate.parse` (a comparison's)."""
    if text is None:
        return None
    from spotlight.client.gate import GateSyntaxError, parse

    try:
        return parse(text, *fields_value_flags)
    except GateSyntaxError as exc:
        raise CliExit(f"--fail-if: {exc}") from None


def apply_gate(gate: Any, regions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which regions cross the gate; a note on stderr for fields some region did not have."""
    if gate is None:
        return None
    missing: set[str] = set()
    hits = [int(r["index"]) for r in regions if gate.matches(r, missing)]
    if missing:
        print(
            f"--fail-if: no value for {', '.join(sorted(missing))} in some regions (those never match; "
            "permutation_p_value needs --param n_permutations=N)",
            file=sys.stderr,
        )
    for k in hits:
        print(f"--fail-if: region {k} matches {gate.text!r}", file=sys.stderr)
    return {"expression": gate.text, "failed": bool(hits), "regions": hits}


# ----- plumbing -----
def _client(args: argparse.Namespace) -> Any:
    from spotlight.client import SpotlightClient

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    return SpotlightClient(args.server, api_key=args.api_key)


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command; server errors become exit 3, and every error is printed (as JSON with --json)."""

    def run(args: argparse.Namespace) -> int:
        from spotlight.client import JobFailedError, JobWaitTimeout, SpotlightError

        try:
            return fn(args)
        except CliExit as exc:
            _report_error(args, exc.error_code, exc.message)
            raise
        except JobWaitTimeout as exc:
            _report_error(args, exc.code, exc.message)
            raise CliExit(exc.message, EXIT_TIMEOUT, exc.code) from None
        except JobFailedError as exc:
            _report_error(
                args, exc.code, f"{exc.status.get('id')} {exc.status.get('status')}: {exc.message}", {"job": exc.status}
            )
            return EXIT_GATE
        except SpotlightError as exc:
            _report_error(args, exc.code, exc.message, {"status_code": exc.status_code, "details": exc.details})
            raise CliExit(f"{exc.code}: {exc.message}", EXIT_SERVER, exc.code) from None
        except (ValueError, TypeError) as exc:  # a table/column/array the client refused before sending
            _report_error(args, "usage_error", str(exc))
            raise CliExit(str(exc)) from None

    return run


def _report_error(args: argparse.Namespace, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
    if getattr(args, "json", False):
        emit_json({"error": {"code": code, "message": message, **(extra or {})}})
    print(f"spotlight {args.command}: {code}: {message}", file=sys.stderr)


# ----- spotlight submit -----
def _check_params(params: dict[str, Any]) -> None:
    """Refuse parameters the server would refuse, before anything is uploaded."""
    try:
        from pydantic import ValidationError

        from spotlight.contract.params import REMOVED, SearchParams
    except ImportError:  # a client-only install without pydantic: the server checks them
        return
    import difflib

    known = sorted(SearchParams.model_fields)
    for key in params:
        if key in REMOVED:
            raise CliExit(f"--param: {REMOVED[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"the parameters are {', '.join(known)}"
            raise CliExit(f"--param: unknown parameter {key!r}; {hint}")
    try:
        checked = SearchParams(**params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CliExit(f"--param: {problems}") from None
    refusals = checked.refusals()
    if refusals:
        raise CliExit(f"--param: {refusals[0][1]}.")


def _check_file_columns(path: Path, columns: dict[str, str] | None) -> None:
    """The columns (Parquet schema, .npz keys) of a local file against --column, before uploading it.

    Only what can be read cheaply: the Parquet schema needs pyarrow (skipped without it, the server
    checks anyway); .npz keys are the zip's member names.
    """
    from spotlight.contract import columns as colmap

    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return
        try:
            names = list(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - unreadable here: let the server say what is wrong with it
            return
    else:
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                names = [n.removesuffix(".npy") for n in zf.namelist()]
        except (zipfile.BadZipFile, OSError):
            return
    emb_cols = [n for n in names if n.startswith("emb_") and n[4:].isdigit()]
    try:
        found = colmap.resolve([n for n in names if n not in emb_cols], columns)
    except colmap.ColumnError as exc:
        raise CliExit(f"{path}: {exc.message}") from None
    if "embeddings" not in found and not emb_cols:
        raise CliExit(f"{path}: {colmap.missing_embeddings_message(names)}")


def _dataset_for(client: Any, args: argparse.Namespace) -> Any:
    """What `POST /v1/jobs` gets as `dataset`: an id, a {"uri"} reference, or the id of an upload."""
    columns = dict(args.column) if args.column else None
    if len(args.files) == 1 and args.files[0].startswith("ds_"):
        if columns or args.labels or args.predictions or args.texts:
            raise CliExit(
                "a stored dataset (ds_…) is searched as it is: --column/--labels/--predictions/--texts do not apply"
            )
        return args.files[0]
    if len(args.files) == 1 and args.files[0].lower().startswith(URI_SCHEMES):
        if args.labels or args.predictions or args.texts:
            raise CliExit("--labels/--predictions/--texts go inside the referenced file")
        return {"uri": args.files[0], **({"columns": columns} if columns else {})}
    import numpy as np

    paths = [Path(p) for p in args.files]
    for p in paths + [Path(x) for x in (args.labels, args.predictions, args.texts) if x]:
        if not p.is_file():
            raise CliExit(f"no such file: {p}")
    if len(paths) == 1 and paths[0].suffix in (".npz", ".parquet"):
        if args.labels or args.predictions or args.texts:
            raise CliExit("--labels/--predictions/--texts go inside the .npz/.parquet (or map them with --column)")
        _check_file_columns(paths[0], columns)
        return client.upload(path=paths[0], columns=columns, name=args.name, tags=args.tag or None)["id"]
    if len(paths) != 2 or any(p.suffix != ".npy" for p in paths):
        raise CliExit("give EMB.npy LOSSES.npy, a single .npz or .parquet file, a URI (s3://…, file://…) or a ds_… id")
    if columns:
        raise CliExit("--column maps the columns of one .npz/.parquet file or URI")

    def load(path: str | Path | None) -> Any:
        if path is None:
            return None
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            if "Python objects" not in str(exc) and "allow_pickle" not in str(exc):
                raise CliExit(f"{path}: not a readable .npy ({exc})") from None
            # An object array is a pickle, and reading a pickle runs code: it is never read. Text
            # saved as text (a fixed-width string dtype) reads without one.
            raise CliExit(
                f"{path} holds Python objects (np.save of a pandas column of strings, dtype=object), which "
                "would have to be unpickled, and pickles are not read. Save the strings as text instead: "
                "np.save(path, df[col].to_numpy().astype(str)) — or upload the DataFrame with the Python "
                "client, or a .parquet file."
            ) from None

    return client.upload(
        embeddings=load(paths[0]),
        losses=load(paths[1]),
        labels=load(args.labels),
        predictions=load(args.predictions),
        name=args.name,
        tags=args.tag or None,
        texts=read_texts_file(args.texts) if args.texts else None,
    )["id"]


def read_texts_file(path: str | Path) -> list[str]:
    """--texts: a .npy of n strings, a .json list of n strings, or a text file with one text per line."""
    import numpy as np

    p = Path(path)
    if p.suffix == ".npy":
        return [str(t) for t in np.load(p, allow_pickle=False).tolist()]
    if p.suffix == ".json":
        value = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(value, list):
            raise CliExit(f"{p}: --texts as JSON must be a list of strings")
        return value
    return p.read_text(encoding="utf-8").splitlines()


@guarded
def cmd_submit(args: argparse.Namespace) -> int:
    """Check, upload, start a job; with --wait show progress (stderr) and print its regions."""
    params = dict(args.param)
    _check_params(params)
    gate = parse_gate(args.fail_if)
    if gate is not None and not args.wait:
        raise CliExit("--fail-if needs --wait (or run `spotlight regions JOB --fail-if …` later)")
    with _client(args) as client:
        dataset = _dataset_for(client, args)
        if isinstance(dataset, str) and not args.json:
            print(f"dataset {dataset}", file=sys.stderr)
        job = client.submit(
            dataset, idempotency_key=args.idempotency_key, name=args.name, tags=args.tag or None, **params
        )
        if not args.wait:
            if args.json:
                emit_json({"job": job.last_status})
            else:
                print(job.id)
            return EXIT_OK
        status = job.wait(progress=not args.quiet, timeout=args.timeout)
        document, tops = _regions_and_tops(job, args.top)
    verdict = apply_gate(gate, document["regions"])
    return _show_regions(args, job.id, {"job": status, **_verdict_of(document), "top_members": tops}, tops, verdict)


def _verdict_of(document: dict[str, Any]) -> dict[str, Any]:
    """What `--json` prints of the regions answer: the job's verdict first, then the regions."""
    keys = ("weak_spot_found", "summary", "level", "regions")
    return {k: document[k] for k in keys if k in document}


def _regions_and_tops(job: Any, top: int) -> tuple[dict[str, Any], list[list[dict[str, Any]]] | None]:
    """The job's regions answer as JSON (regions plus the job's verdict) and, with `top` > 0, each
    region's `top` members by contribution."""
    document = job.regions_document().model_dump(mode="json")
    if top <= 0:
        return document, None
    return document, [job.members(r["index"], limit=top, order="contribution")["members"] for r in document["regions"]]


def _show_regions(
    args: argparse.Namespace, job_id: str, payload: dict[str, Any], tops: Any, verdict: dict[str, Any] | None
) -> int:
    """Regions as JSON (`payload`, plus the gate's verdict) or as the table; the gate decides the exit code."""
    if args.json:
        emit_json({**payload, **({"gate": verdict} if verdict else {})})
    else:
        from rich.console import Console

        print_regions(Console(), job_id, payload["regions"], tops, payload.get("summary"))
    return EXIT_GATE if verdict and verdict["failed"] else EXIT_OK


# ----- spotlight status / regions / members / report / cancel -----
@guarded
def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job)
        status = (
            job.wait(progress=not args.quiet, timeout=args.timeout, raise_on_failure=False)
            if args.wait
            else job.status()
        )
    if args.json:
        emit_json(status)
    else:
        p = status.get("progress") or {}
        err = status.get("error") or {}
        line = f"{status['id']} {status['status']}"
        if status["status"] == "running":
            line += f" {100 * float(p.get('fraction', 0)):.0f}%"
        if err:
            line += f" {err.get('code')}: {err.get('message')}"
        print(line)
    return EXIT_GATE if args.wait and status.get("status") != "finished" else EXIT_OK


@guarded
def cmd_regions(args: argparse.Namespace) -> int:
    gate = parse_gate(args.fail_if)
    with _client(args) as client:
        document, tops = _regions_and_tops(client.job(args.job), args.top)
    verdict = apply_gate(gate, document["regions"])
    payload = {"job": args.job, **_verdict_of(document), **({"top_members": tops} if tops is not None else {})}
    return _show_regions(args, args.job, payload, tops, verdict)


@guarded
def cmd_members(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.job(args.job).members(args.k, limit=args.limit, offset=args.offset, order=args.order)
    if args.json:
        emit_json(answer)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.job} region {args.k}: {answer['total']} members (by {args.order})")
    with_text = any(m.get("text") is not None for m in answer["members"])
    cols = ["row", "id", "weight", "loss", "contribution", "label", "prediction"] + (["text"] if with_text else [])
    for col in cols + ["metadata"]:
        table.add_column(col)
    for m in answer["members"]:
        meta = json.dumps(_brief(m.get("metadata")), default=str)[:80] if m.get("metadata") else ""
        text = [str(m.get("text") or "")[:120]] if with_text else []
        table.add_row(
            str(m["index"]),
            str(m.get("id") if m.get("id") is not None else ""),
            f"{m['weight']:.3g}",
            f"{m['loss']:.4g}",
            f"{m.get('contribution', 0):.4g}",
            str(m.get("label") or ""),
            str(m.get("prediction") or ""),
            *text,
            meta,
        )
    Console().print(table)
    return EXIT_OK


def _brief(metadata: Any) -> Any:
    """Metadata for a table cell: an image (a `data:` URI, often kBs of base64) as its type and size."""
    if not isinstance(metadata, dict):
        return metadata
    return {
        k: f"<{v[5:].split(';', 1)[0].split(',', 1)[0] or 'data'}, {len(v) * 3 // 4 / 1024:.1f} kB>"
        if isinstance(v, str) and v.startswith("data:")
        else v
        for k, v in metadata.items()
    }


@guarded
def cmd_report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job)
        html = job.report() if args.wait is None else job.report(timeout=args.wait)
    if args.output and args.output != "-":
        Path(args.output).write_text(html, encoding="utf-8")
        if args.json:
            emit_json({"job": args.job, "report": os.path.abspath(args.output), "bytes": len(html.encode())})
        else:
            print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(html)
    return EXIT_OK


@guarded
def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.job(args.job).cancel()
    if args.json:
        emit_json(status)
    else:
        print(
            f"{status['id']} {status['status']}"
            + (" (stopping)" if status.get("cancel_requested") and status["status"] == "running" else "")
        )
    return EXIT_OK


# ----- the parsers -----
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("SPOTLIGHT_SERVER", "http://127.0.0.1:8000"),
        help="the service's URL (default $SPOTLIGHT_SERVER or http://127.0.0.1:8000)",
    )
    p.add_argument("--api-key", default=os.environ.get("SPOTLIGHT_API_KEY"), help="default $SPOTLIGHT_API_KEY")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (progress and logs on stderr)")


def _gate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fail-if",
        default=None,
        metavar="EXPR",
        help="exit 1 when a region matches, e.g. 'lift > 3 and p_value < 0.05' "
        "(fields: lift, weighted_loss, p_value, error_rate, n_members, total_weight, …)",
    )


def register(sub: Any) -> None:
    """Add the client commands to the `spotlight` parser's subcommands."""
    sm = sub.add_parser("submit", help="upload a dataset (or name one), start a search, optionally wait and gate")
    sm.add_argument(
        "files",
        nargs="+",
        metavar="DATA",
        help="EMB.npy LOSSES.npy, one .npz/.parquet, a URI the server reads (s3://…, file://…), or ds_…",
    )
    sm.add_argument("--labels", default=None, help="labels .npy (n ints or class names), with EMB.npy LOSSES.npy")
    sm.add_argument("--predictions", default=None, help="predictions .npy, with EMB.npy LOSSES.npy")
    sm.add_argument(
        "--texts",
        default=None,
        help="the rows' texts (.npy of strings, .json list, or .txt one per line), with EMB.npy LOSSES.npy: "
        "regions are described by their over-represented words",
    )
    sm.add_argument(
        "--column",
        action="append",
        default=[],
        type=parse_column,
        metavar="FIELD=COLUMN",
        help="which column of a .parquet/.npz/URI holds a field, e.g. embeddings=emb (repeatable)",
    )
    sm.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="a search parameter, e.g. n_spotlights=3 (checked before uploading)",
    )
    sm.add_argument("--wait", action="store_true", help="wait for the job, then print its regions")
    sm.add_argument(
        "--top",
        type=int,
        default=3,
        metavar="N",
        help="with --wait, list each region's N top members by contribution (0: none)",
    )
    sm.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait (exit 4 past it)")
    sm.add_argument("--quiet", action="store_true", help="no progress bar")
    sm.add_argument("--idempotency-key", default=None, help="same key + same request: the same job")
    sm.add_argument("--name", default=None, help="your label for the job (and the dataset it uploads)")
    sm.add_argument("--tag", action="append", default=[], help="a tag for the job (repeatable)")
    _gate_arg(sm)
    _common(sm)
    sm.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="a job's status and progress")
    st.add_argument("job", metavar="JOB")
    st.add_argument("--wait", action="store_true", help="wait until it ends (exit 1 unless it finished)")
    st.add_argument("--timeout", type=float, default=3600.0)
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(st)
    st.set_defaults(func=cmd_status)

    rg = sub.add_parser("regions", help="a finished job's regions (a table, or --json)")
    rg.add_argument("job", metavar="JOB")
    rg.add_argument("--top", type=int, default=0, metavar="N", help="each region's N top members by contribution")
    _gate_arg(rg)
    _common(rg)
    rg.set_defaults(func=cmd_regions)

    mb = sub.add_parser("members", help="the members of region K of a finished job")
    mb.add_argument("job", metavar="JOB")
    mb.add_argument("k", type=int, metavar="K")
    mb.add_argument("--limit", type=int, default=20)
    mb.add_argument("--offset", type=int, default=0)
    mb.add_argument("--order", choices=("weight", "contribution"), default="contribution")
    _common(mb)
    mb.set_defaults(func=cmd_members)

    rp = sub.add_parser("report", help="a finished job's HTML report (to stdout, or -o FILE)")
    rp.add_argument("job", metavar="JOB")
    rp.add_argument("--output", "-o", default=None)
    rp.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="S",
        help="wait up to S seconds for a report still being rendered after the job finished "
        "(default: the client's, 2 minutes; 0: do not wait)",
    )
    _common(rp)
    rp.set_defaults(func=cmd_report)

    cc = sub.add_parser("cancel", help="cancel a queued or running job")
    cc.add_argument("job", metavar="JOB")
    _common(cc)
    cc.set_defaults(func=cmd_cancel)
