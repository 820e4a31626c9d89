"""Python client of the Spotlight service: one method per verb of the HTTP contract (openapi/openapi.json).

It needs only numpy, httpx and pydantic (the typed region record), so it installs on any laptop next to a notebook; a progress bar uses
`rich` (or `tqdm`) when one of them is importable. From this repository it imports only numpy-only
modules (spotlight/contract/columns.py, kernel.py, tables.py). pandas, pyarrow and `datasets` are imported
only when a table of theirs is given, or a DataFrame of results is asked for.

    job = sc.submit(df, embeddings="embedding", losses="loss", labels="label", ids="id")
    job.wait()
    job.regions_df()                     # one row per region (pandas)
    job.members_df(0)                    # region 0's members, metadata as columns
    job.regions()[0].weights(new_x)      # the region's kernel weight of new embeddings, locally
                                         # (a pca_components job's basis is fetched once, then cached)

    from spotlight.client import SpotlightClient

    with SpotlightClient("http://127.0.0.1:8000", api_key="...") as sc:
        job = sc.submit(embeddings, losses, labels=labels, n_spotlights=3, spotlight_size=0.02)
        job.wait()                       # progress bar; raises SpotlightError if the job failed
        for region in job.regions():
            print(region.index, region.significant, region.lift)
        top = job.members(0, limit=10)["members"]
        weights = job.weights()          # np.ndarray, n x k
        print(job.report_url)

Every error answer of the server becomes one exception type, :class:`SpotlightError`, carrying the
server's ``error.code`` (e.g. ``job_not_finished``, ``shape_mismatch``), its message, details, HTTP
status and the response. Network failures raise it too, with code ``connection_error``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import httpx
import numpy as np
from pydantic import PrivateAttr

from spotlight.client import tables
from spotlight.contract import kernel
from spotlight.contract.client_errors import SpotlightError
from spotlight.contract.records import RegionRecord, RegionsDocument

if TYPE_CHECKING:
    from spotlight.client.compare_client import Comparison

__all__ = ["Job", "JobFailedError", "JobWaitTimeout", "Region", "Regions", "SpotlightClient", "SpotlightError"]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# An upload's answer comes after the server has validated and stored everything: allow it longer.
UPLOAD_READ_TIMEOUT_S = 600.0
_SPOOL_BYTES = 64 * 1024 * 1024  # arrays up to this size are packed in memory, larger ones in a temp file
_TERMINAL = ("finished", "failed", "canceled")
# How long `Job.report` waits for a report still being rendered after its job finished (a 2 000-row job's
# takes about a second; a large one's several, and it may queue behind a search).
REPORT_WAIT_S = 120.0
# embeddings up to this many numbers are scored inline (at most ~26 bytes of JSON each: under the server's
# default 8 MiB SPOTLIGHT_MAX_SCORE_BODY_BYTES); more are uploaded once and scored by id
INLINE_SCORE_VALUES = 250_000


class JobFailedError(SpotlightError):
    """`Job.wait()` saw the job end failed or canceled; ``code`` is the job's own error code."""

    def __init__(self, status: dict[str, Any]) -> None:
        err = status.get("error") or {}
        code = err.get("code") or status.get("status", "failed")
        message = err.get("message") or f"job {status.get('id')} ended {status.get('status')}"
        super().__init__(code, message, None, {"job": status.get("id"), "status": status.get("status")})
        self.status = status


class JobWaitTimeout(SpotlightError, TimeoutError):
    """`Job.wait(timeout=...)` ran out before the job ended (the job itself goes on)."""


def _codes_or_names(values: Any) -> np.ndarray:
    """Labels or predictions to send: numbers as int64 codes, anything else as text (class names)."""
    v = np.asarray(values).ravel()
    return v.astype(np.int64) if np.issubdtype(v.dtype, np.number) else v


class Region(RegionRecord):
    """One region as the API returns it, typed (spotlight/contract/records.py: ``r.lift``, ``r.significant``,
    ``r.p_value``), plus :meth:`weights` for new data. ``r.model_dump()`` gives the JSON form.

    Its `job` (set by `Job.regions()`) is where a region found with ``pca_components`` fetches the
    basis its distance is measured along."""

    _job: Job | None = PrivateAttr(None)

    @property
    def job(self) -> Job | None:
        return self._job

    def weights(self, embeddings: Any, labels: Any = None, predictions: Any = None, basis: Any = None) -> np.ndarray:
        """The region's kernel weight (in [0, 1]) of each row of `embeddings` (n x d, the job's d).

        The engine's own formula (spotlight/contract/kernel.py) from the region's centre, precision and
        kernel, so it equals what `POST /v1/jobs/{id}/score` answers. A region found with
        ``pca_components`` measures distance along the job's principal axes: `basis` (d x k), by
        default its job's `Job.basis()` (fetched once per Job, then cached); a region with neither
        (one rebuilt from saved JSON) raises `spotlight.contract.kernel.RegionSpaceError`. So do regions found
        with label evidence (an ``evidence`` term) when the rows' `labels` (and, for its kinds that
        use them, `predictions`) are not given.
        """
        if basis is None and self.precision_space == "pca" and self._job is not None:
            basis = self._job.basis()
        return kernel.region_weights(embeddings, self, basis, labels=labels, predictions=predictions)


class Regions(RegionsDocument):
    """`GET /v1/jobs/{id}/regions`, typed: the regions and the job's verdict (`weak_spot_found`, `summary`)."""

    regions: list[Region]  # type: ignore[assignment]  # the client's Region: a RegionRecord with weights()


class Job:
    """A submitted search. Cheap to make: ``client.job("job_…")`` attaches to an existing one."""

    def __init__(self, client: SpotlightClient, job_id: str, initial: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = job_id
        self.last_status: dict[str, Any] | None = initial
        self._basis: np.ndarray | None = None

    def __repr__(self) -> str:
        state = self.last_status.get("status") if self.last_status else "?"
        return f"Job({self.id!r}, status={state!r})"

    # ----- state -----
    def status(self) -> dict[str, Any]:
        """`GET /v1/jobs/{id}`: status, progress, timing, error, params."""
        self.last_status = self.client._json("GET", f"/v1/jobs/{self.id}")
        return self.last_status

    def wait(
        self, progress: bool = True, timeout: float | None = None, poll: float = 0.5, raise_on_failure: bool = True
    ) -> dict[str, Any]:
        """Poll until the job ends; return its final status.

        Shows a progress bar fed by the status's ``progress.fraction`` when `progress` is true and
        `rich` or `tqdm` is importable. Raises :class:`JobFailedError` when the job ends failed or
        canceled (unless `raise_on_failure` is false), :class:`JobWaitTimeout` after `timeout` s.
        Brief network hiccups and 503s while polling are ridden out (a restarting API is normal).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = max(0.05, poll)
        with _progress_bar(progress, self.id) as update:
            transient_since: float | None = None
            while True:
                try:
                    status = self.status()
                    transient_since = None
                except SpotlightError as exc:
                    if exc.code != "connection_error" and exc.status_code not in (502, 503, 504):
                        raise
                    transient_since = transient_since or time.monotonic()
                    if time.monotonic() - transient_since > max(30.0, 10 * poll):
                        raise
                    status = self.last_status or {"status": "queued", "progress": {}}
                update(status)
                if status.get("status") in _TERMINAL:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobWaitTimeout(
                        "wait_timeout",
                        f"job {self.id} still {status.get('status')} after {timeout:g} s",
                        None,
                        {"job": self.id, "status": status.get("status")},
                    )
                time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
        if raise_on_failure and status.get("status") != "finished":
            raise JobFailedError(status)
        return status

    def cancel(self) -> dict[str, Any]:
        """`DELETE /v1/jobs/{id}`: a queued job is canceled at once, a running one at its next step."""
        self.last_status = self.client._json("DELETE", f"/v1/jobs/{self.id}")
        return self.last_status

    # ----- results (SpotlightError code job_not_finished until the job has finished) -----
    def regions(self) -> list[Region]:
        """The regions found (:class:`Region`, typed; see spotlight/contract/records.py for every field).

        Each carries its verdict: ``significant`` (held-out rows lose more the deeper they lie in the
        region than chance would have it, at the job's level, corrected over the job's regions), ``p_value``, and the honest
        ``mean_loss``, ``lift``, ``error_rate`` measured on rows the search never saw; the search's own
        kernel-weighted figures are ``weighted_loss``/``weighted_lift``. Also ``n_members`` (the flat
        kernel's support; for the gaussian, the heaviest rows that count as many examples as the
        region), ``effective_size``, ``overlap`` with earlier regions, ``member_mean``/``medoid`` (where
        it is), ``member_min_weight`` (see :meth:`score`) and ``description`` (who its members are: the
        ``labels`` / ``predictions`` / ``metadata`` values they over-represent, each also a rule with its
        ``precision`` and ``recall``; with texts, ``text_terms`` (words over-represented in the members'
        texts, each with precision, recall and a ``lift`` measured on the rows ``text_terms_lift_on``
        names) and ``text_examples``). A region whose description failed has ``description`` None and
        ``description_error`` saying why. :meth:`verdict` has the job-level answer ("no weak spot
        found" is a result).
        """
        return self.regions_document().regions

    def regions_document(self) -> Regions:
        """The whole answer of `GET /v1/jobs/{id}/regions`: regions plus ``weak_spot_found`` and ``summary``."""
        doc = Regions.model_validate(self.client._json("GET", f"/v1/jobs/{self.id}/regions"))
        for region in doc.regions:
            region._job = self
        return doc

    def verdict(self) -> str:
        """The job's verdict in one sentence, e.g. "No weak spot found: …"."""
        return self.regions_document().summary

    def regions_df(self) -> Any:
        """The regions as a pandas DataFrame: one row per region (significant, p-value, the honest lift and
        mean loss with their interval, the weighted figures, size, members, error rate, what stands out,
        and with texts ``text_terms``: the over-represented words with their precision, recall and lift).
        Its ``attrs["summary"]`` and ``attrs["weak_spot_found"]`` carry the job's verdict."""
        doc = self.regions_document()
        df = tables.pandas().DataFrame(tables.region_rows([r.model_dump(mode="json") for r in doc.regions]))
        df.attrs["summary"] = doc.summary
        df.attrs["weak_spot_found"] = doc.weak_spot_found
        return df

    def members_df(self, k: int, limit: int | None = None, order: str = "weight") -> Any:
        """Region k's members as a pandas DataFrame (all of them unless `limit`), metadata keys as columns."""
        rows = list(self.iter_members(k, order=order)) if limit is None else self.members(k, limit, 0, order)["members"]
        return tables.pandas().DataFrame(tables.member_rows(rows))

    def membership_df(self) -> Any:
        """Every (row, region) membership as a pandas DataFrame, keyed by your ids: columns
        id, index, region, weight, loss, contribution, label, prediction. Join it to your own table
        with ``df.merge(job.membership_df(), on="id")``."""
        rows: list[dict[str, Any]] = []
        for r in self.regions():
            rows += tables.member_rows(list(self.iter_members(r.index, page=1000)), region=r.index)
        base = ["id", "index", "region", "weight", "loss", "contribution", "label", "prediction"]
        return tables.pandas().DataFrame([{c: row.get(c) for c in base} for row in rows], columns=base)

    def score(self, dataset: Any, labels: Any = None, predictions: Any = None) -> dict[str, Any]:
        """`POST /v1/jobs/{id}/score`: each row of another dataset's weight in each region, and
        whether it is a member. `dataset`: a stored dataset's id, or embeddings (n x d, the job's d;
        from a DataFrame: ``np.stack(df["embedding"])``). Returns ``{"n", "weights": n x k list,
        "members": [[row, ...] per region], "ids", "member_min_weight", "dataset"}``: a row is a
        member of region k when its weight is above 0 and at least ``member_min_weight[k]``, the
        threshold region k drew on the data it was found on (spotlight/contract/members.py). Regions found with
        label evidence need the rows' `labels` (and `predictions`) with embeddings; a stored dataset
        brings its own. Regions found with ``pca_components`` are scored along the job's stored PCA
        basis (results stored without it: SpotlightError ``pca_basis_missing``, HTTP 409)."""
        if isinstance(dataset, str) and dataset.startswith("ds_"):
            body: dict[str, Any] = {"dataset": dataset}
        else:
            x = np.asarray(dataset, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(f"score wants embeddings as an n x d array, got shape {list(x.shape)}")
            codes = {  # class names or integer codes, as the job's dataset had them
                name: _codes_or_names(v)
                for name, v in (("labels", labels), ("predictions", predictions))
                if v is not None
            }
            if x.size <= INLINE_SCORE_VALUES:
                # scored as they are: nothing is stored
                body = {
                    "embeddings": x.tolist(),
                    **{k: [c if isinstance(c, int) else str(c) for c in v.tolist()] for k, v in codes.items()},
                }
            else:  # too big for one JSON body: store them once (losses are not used)
                stored = self.client.upload(
                    x,
                    np.zeros(x.shape[0], dtype=np.float32),
                    labels=codes.get("labels"),
                    predictions=codes.get("predictions"),
                )
                body = {"dataset": stored["id"]}
        return dict(self.client._json("POST", f"/v1/jobs/{self.id}/score", json=body))

    def overlaps(self) -> np.ndarray:
        """k x k: entry (j, i) is the share of region j's members that are also members of region i
        (filled below the diagonal from each region's ``overlap``, 1 on it, NaN above)."""
        regions = self.regions()
        out = np.full((len(regions), len(regions)), np.nan)
        for j, region in enumerate(regions):
            out[j, j] = 1.0
            for entry in region.overlap:
                out[j, entry.region] = entry.share
        return out

    def members(self, k: int, limit: int = 50, offset: int = 0, order: str = "weight") -> dict[str, Any]:
        """A page of region k's member set: ``{"total", "members": [{"index", "id", "weight", "loss",
        "contribution", "label", "prediction", "metadata"}]}`` (``total`` is the region's ``n_members``),
        highest weight first, or with ``order="contribution"`` highest weight x (loss - the job's loss
        floor) first: the failing examples of the region."""
        return self.client._json(
            "GET",
            f"/v1/jobs/{self.id}/regions/{int(k)}/members",
            params={"limit": limit, "offset": offset, "order": order},
        )

    def iter_members(self, k: int, page: int = 500, order: str = "weight") -> Iterator[dict[str, Any]]:
        """Every member of region k, fetched page by page, in `order` (see `members`)."""
        offset = 0
        while True:
            answer = self.members(k, limit=page, offset=offset, order=order)
            rows = answer["members"]
            yield from rows
            offset += len(rows)
            if not rows or offset >= answer["total"]:
                return

    def member_indices(self, k: int, order: str = "weight", page: int = 1000) -> np.ndarray:
        """Region k's member rows (int64) in `order`, fetched page by page."""
        return np.array([m["index"] for m in self.iter_members(k, page=page, order=order)], dtype=np.int64)

    def weights(self) -> np.ndarray:
        """The kernel value of every example in every region, members or not: float32, n x k."""
        response = self.client._request("GET", f"/v1/jobs/{self.id}/weights")
        return np.load(io.BytesIO(response.content), allow_pickle=False)

    def basis(self) -> np.ndarray:
        """`GET /v1/jobs/{id}/basis`: the principal axes (float64, d x k, orthonormal columns) a search
        with ``pca_components`` measured its regions' distance along; `Region.weights` uses it. Fetched
        once and kept on this Job (a finished job's basis never changes). A job without
        ``pca_components`` has none (SpotlightError ``not_found``); results stored without it, by a
        worker older than the one that stores it, raise ``pca_basis_missing``."""
        if self._basis is None:
            response = self.client._request("GET", f"/v1/jobs/{self.id}/basis")
            self._basis = np.load(io.BytesIO(response.content), allow_pickle=False)
        return self._basis

    @property
    def report_url(self) -> str:
        """Where the job's HTML report is (open it in a browser; it needs the API key if one is set)."""
        return f"{self.client.url}/v1/jobs/{self.id}/report"

    def report(self, timeout: float | None = REPORT_WAIT_S) -> str:
        """The report page's HTML.

        The service renders a job's report after the job finished (its regions and members do not
        wait for the plots), so right after `finished` the report may not be there yet: this waits for
        it, as the server's Retry-After says, for up to `timeout` s (None: no limit; 0: do not wait),
        then raises the server's ``report_not_ready``. A report that could not be made raises
        ``report_failed`` at once, with the reason.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.client._request("GET", f"/v1/jobs/{self.id}/report").text
            except SpotlightError as exc:
                if exc.code != "report_not_ready":
                    raise
                pause = _retry_after(exc, default=1.0)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise
                    pause = min(pause, left)
                time.sleep(pause)

    def save_report(self, path: str | os.PathLike[str], timeout: float | None = REPORT_WAIT_S) -> str:
        """Write the report to `path` (a file a browser opens without the service); return the path.
        Waits for a report still being rendered as `report` does."""
        html = self.report(timeout)
        with open(path, "w", encoding="utf-8") as f:
            f.write(html)
        return os.fspath(path)


def _retry_after(exc: SpotlightError, default: float) -> float:
    """The server's Retry-After in seconds (bounded to 0.1..30), or `default` without one."""
    header = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return min(30.0, max(0.1, float(header))) if header else default
    except ValueError:
        return default


class SpotlightClient:
    """A connection to one Spotlight service. Use it as a context manager (or call close()).

    Parameters
    ----------
    url : str
        The service's base URL, e.g. ``http://127.0.0.1:8000``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <key>`` when the operator has configured keys.
    timeout : float or httpx.Timeout
        Per-request timeout; uploads get a longer read timeout (the server answers after storing).
    transport : httpx.BaseTransport, optional
        For tests (e.g. ``httpx.MockTransport``) or custom networking.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "spotlight-client/1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=10.0)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self._timeout, transport=transport)

    def __enter__(self) -> SpotlightClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ----- plumbing -----
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            hint = ""
            if isinstance(exc, httpx.ConnectError):
                hint = (
                    f"; nothing answers at {self.url}: is the service running (`make run`), and is this its "
                    "address? Point the client elsewhere with SpotlightClient(url), the CLI with --server or "
                    "SPOTLIGHT_SERVER"
                )
            raise SpotlightError("connection_error", f"{method} {self.url}{path}: {exc!r}{hint}") from exc
        if response.is_error:
            raise SpotlightError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise SpotlightError(
                "bad_response",
                f"{method} {path} answered {response.status_code} with non-JSON content",
                response.status_code,
                {},
                response,
            ) from None

    # ----- operations -----
    def health(self) -> bool:
        """True when `GET /readyz` says Redis and the store are reachable."""
        try:
            self._request("GET", "/readyz")
            return True
        except SpotlightError:
            return False

    # ----- datasets -----
    def upload(
        self,
        embeddings: Any = None,
        losses: Any = None,
        labels: Any = None,
        predictions: Any = None,
        ids: Sequence[str | int] | np.ndarray | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        logits: Any = None,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        sample_weights: Any = None,
        columns: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        texts: Any = None,
    ) -> dict[str, Any]:
        """`POST /v1/datasets`: store a dataset once, search it many times. Returns the dataset
        (``{"id": "ds_…", "n", "dim", "fields", "sha256", "created_at"}``).

        Give arrays (packed into one .npz, sent as multipart field ``file``); or a table — a pandas
        DataFrame, a pyarrow Table or a Hugging Face ``datasets.Dataset`` — as the first argument with
        the other arguments naming its columns (``upload(df, losses="loss", labels="label")``; columns
        named embedding/loss/label/pred/id … are found without naming, every other column becomes
        metadata); or `path`: one .npz / .parquet file (`columns` maps fields to its column names), or
        a list of .npy files each named after its key (``embeddings.npy``, ``losses.npy``, ...).
        Labels and predictions may be class names (text): the server stores codes plus the names.
        `name` and `tags` are your labels for the dataset (listed back with it). `texts`: the rows'
        texts (n strings; with a table, the name of its text column — one named text/texts/sentence is
        found without naming): each region's description then names the words over-represented among
        its members' texts, each checked as a rule (``text_terms``).
        """
        timeout = httpx.Timeout(self._timeout.connect, read=UPLOAD_READ_TIMEOUT_S, write=None, pool=None)
        query = _name_tags(name, tags)
        kind = tables.kind_of(embeddings)
        if kind is not None:
            named = {
                "embeddings": None,
                "losses": losses,
                "labels": labels,
                "predictions": predictions,
                "ids": ids,
                "logits": logits,
                "sample_weights": sample_weights,
                "texts": texts,
                **dict(columns or {}),
            }
            return self._upload_table(embeddings, kind, named, metadata, timeout, query)
        if path is not None:
            if embeddings is not None:
                raise ValueError("give arrays or path, not both")
            with _files_for_path(path, columns) as files:
                return self._json("POST", "/v1/datasets", files=files, timeout=timeout, params=query)
        if embeddings is None:
            raise ValueError("upload needs embeddings (and losses, or logits + labels), or a path")
        arrays = _dataset_arrays(embeddings, losses, labels, predictions, ids, metadata, logits, sample_weights)
        if texts is not None:
            arrays["texts"] = np.asarray(["" if t is None else str(t) for t in texts], dtype=str)
        with _npz_file(arrays) as f:
            return self._json(
                "POST",
                "/v1/datasets",
                files={"file": ("dataset.npz", f, "application/zip")},
                timeout=timeout,
                params=query,
            )

    def _upload_table(
        self,
        table: Any,
        kind: str,
        named: dict[str, Any],
        metadata: Any,
        timeout: httpx.Timeout,
        query: dict[str, Any],
    ) -> dict[str, Any]:
        """A table as one Parquet file plus the `columns` mapping (spotlight/client/tables.py)."""
        names = tables.column_names(table, kind)
        mapping = tables.mapping_for(names, named)
        keep = None
        if metadata is not None:  # with a table, metadata= is the list of columns to keep as metadata
            if isinstance(metadata, str) or not all(isinstance(c, str) for c in metadata):
                raise TypeError("with a table, metadata= is a list of column names to keep as metadata")
            missing = [c for c in metadata if c not in names]
            if missing:
                raise ValueError(f"metadata columns {missing} are not in the table; found {names}")
            from spotlight.contract import columns as colmap

            fields = colmap.resolve([c for c in names if not c.startswith("emb_")], mapping)
            emb_cols = [c for c in names if c.startswith("emb_") and c[4:].isdigit()]
            keep = [c for c in names if c in fields.values() or c in emb_cols or c in metadata]
        with tables.parquet_file(table, kind, keep) as f:
            data = {"columns": json.dumps(mapping)} if mapping else None
            return self._json(
                "POST",
                "/v1/datasets",
                files={"file": ("dataset.parquet", f, "application/octet-stream")},
                data=data,
                timeout=timeout,
                params=query,
            )

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def datasets(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Your datasets, newest first."""
        return list(self._json("GET", "/v1/datasets", params={"limit": limit, "offset": offset})["datasets"])

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # ----- jobs -----
    def submit(
        self,
        embeddings_or_dataset_id: Any,
        losses: Any = None,
        labels: Any = None,
        ids: Sequence[str | int] | np.ndarray | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        *,
        predictions: Any = None,
        logits: Any = None,
        embeddings: str | None = None,
        sample_weights: Any = None,
        columns: Mapping[str, str] | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        texts: Any = None,
        **params: Any,
    ) -> Job:
        """`POST /v1/jobs`: start a search; `params` are the contract's (n_spotlights, spotlight_size,
        kernel, ...). The first argument is a dataset id (``"ds_…"``), a ``{"uri": …}`` reference, a
        path to an .npz/.parquet file, the embeddings array, or a table (pandas DataFrame, pyarrow
        Table, ``datasets.Dataset``) whose columns the other arguments name:
        ``submit(df, embeddings="embedding", losses="loss", labels="label", predictions="pred", ids="id")``
        (uploaded first, as with upload()). `name` and `tags` label the job (and a dataset uploaded for it)."""
        first = embeddings_or_dataset_id
        labels_of: dict[str, Any] = {"name": name, "tags": tags}

        def upload_arrays(table_columns: dict[str, Any] | None) -> str:
            # a table's columns, or arrays: the same fields as upload() takes, uploaded first
            return str(
                self.upload(
                    first,
                    losses,
                    labels,
                    predictions,
                    ids,
                    metadata,
                    logits,
                    sample_weights=sample_weights,
                    columns=table_columns,
                    texts=texts,
                    **labels_of,
                )["id"]
            )

        if tables.kind_of(first) is not None:
            if not (metadata is None or isinstance(metadata, (list, tuple))):
                raise TypeError("with a table, metadata= is a list of column names to keep as metadata")
            table_columns = {"embeddings": embeddings, **dict(columns or {})}
            named = {k: v for k, v in table_columns.items() if v is not None}
            return self._start(upload_arrays(named), params, callback_url, idempotency_key, **labels_of)
        if embeddings is not None:
            raise TypeError("embeddings= names a column of a table; with arrays pass them as the first argument")
        by_reference = isinstance(first, (str, os.PathLike, Mapping))
        if by_reference and any(x is not None for x in (losses, labels, ids, metadata, predictions, logits, texts)):
            raise ValueError("losses/labels/ids/metadata/texts go with embeddings, not with a stored dataset or a file")
        if isinstance(first, str) and first.startswith("ds_"):
            dataset: Any = first
        elif isinstance(first, Mapping):
            dataset = dict(first)
        elif isinstance(first, (str, os.PathLike)):
            dataset = self.upload(path=first, columns=columns, **labels_of)["id"]
        else:
            dataset = upload_arrays(None)
        return self._start(dataset, params, callback_url, idempotency_key, **labels_of)

    def _start(
        self,
        dataset: Any,
        params: dict[str, Any],
        callback_url: str | None,
        idempotency_key: str | None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Job:
        body: dict[str, Any] = {"dataset": dataset, "params": params}
        if name is not None:
            body["name"] = name
        if tags:
            body["tags"] = list(tags)
        if callback_url:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self._json("POST", "/v1/jobs", json=body, headers=headers)
        return Job(self, answer["id"], answer)

    def job(self, job_id: str) -> Job:
        """Attach to an existing job by id (nothing is requested until you ask)."""
        return Job(self, job_id)

    def compare(
        self, old: str | Job, new: str | Job | None = None, *, dataset: str | None = None, level: float = 0.05
    ) -> Comparison:
        """Compare job `old` with job `new` (two models evaluated on the same rows, matched by your ids),
        or with `dataset` (a stored ``ds_…`` of new rows for the same model): a stored comparison whose
        ``frame()`` is a DataFrame of weak spots (fixed / still_there / worse / new / unconfirmed) or of
        regions (share of new rows vs. original, drift). See docs/USING.md "Comparing runs"."""
        from spotlight.client.compare_client import Comparison

        if (new is None) == (dataset is None):
            raise ValueError("give either new (a job) or dataset")
        old_id = old.id if isinstance(old, Job) else old
        body: dict[str, Any] = {"level": level}
        if new is not None:
            body["job"] = new.id if isinstance(new, Job) else new
        else:
            body["dataset"] = dataset
        return Comparison(self, self._json("POST", f"/v1/jobs/{old_id}/compare", json=body))

    def comparison(self, comparison_id: str) -> Comparison:
        """A stored comparison by id (``cmp_…``)."""
        from spotlight.client.compare_client import Comparison

        return Comparison(self, self._json("GET", f"/v1/comparisons/{comparison_id}"))

    def jobs(self, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict[str, Any]]:
        """Your jobs, newest first (only those in `status` — queued, running, finished, failed, canceled — if given)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return list(self._json("GET", "/v1/jobs", params=params)["jobs"])


def _name_tags(name: str | None, tags: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(tags, str):
        raise TypeError("tags= is a list of strings, e.g. tags=['nightly']")
    query: dict[str, Any] = {}
    if name is not None:
        query["name"] = name
    if tags:
        query["tags"] = list(tags)
    return query


# ----- packing arrays -----
def _dataset_arrays(
    embeddings: Any,
    losses: Any,
    labels: Any,
    predictions: Any,
    ids: Any,
    metadata: Any,
    logits: Any,
    sample_weights: Any,
) -> dict[str, np.ndarray]:
    emb = np.asarray(embeddings)
    if emb.dtype == object and emb.ndim == 1 and emb.size:  # a sequence of per-row arrays (e.g. a Series)
        try:
            emb = np.stack([np.asarray(row, dtype=np.float64) for row in emb])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"embeddings: rows are not equal-length number arrays ({exc})") from None
    if emb.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numbers, got dtype {emb.dtype}")
    arrays: dict[str, np.ndarray] = {"embeddings": emb.astype(np.float32, copy=False)}
    if losses is not None:
        arrays["losses"] = np.asarray(losses, dtype=np.float32)
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
    if sample_weights is not None:
        arrays["sample_weights"] = np.asarray(sample_weights, dtype=np.float32)
    for name, value in (("labels", labels), ("predictions", predictions)):
        if value is not None:
            arr = np.asarray(value)
            if arr.dtype == object and all(isinstance(v, str) for v in arr.ravel().tolist()):
                arr = arr.astype(str)
            if arr.dtype.kind in "US":  # class names: the server stores codes plus the names
                arrays[name] = arr.astype(str)
                continue
            if arr.dtype.kind not in "iub":
                raise ValueError(
                    f"{name} must be integers (class indices) or class names (text), got dtype {arr.dtype}"
                )
            arrays[name] = arr.astype(np.int64, copy=False)
    if ids is not None:
        id_list = list(np.asarray(ids).tolist()) if isinstance(ids, np.ndarray) else list(ids)
        all_ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in id_list)
        arrays["ids"] = np.asarray(id_list, dtype=np.int64) if all_ints else np.asarray([str(v) for v in id_list])
    if metadata is not None:
        # One JSON string holding the list: the server reads either that or one string per row;
        # a single string avoids numpy padding every row to the longest one.
        rows = [_json_safe(dict(m)) for m in metadata]
        arrays["metadata"] = np.asarray(json.dumps(rows, allow_nan=False))
    return arrays


def _json_safe(value: Any) -> Any:
    """A metadata value as JSON: NaN/inf/NaT -> null, timestamps -> ISO text, numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing timestamp / missing value
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@contextmanager
def _npz_file(arrays: dict[str, np.ndarray]) -> Iterator[IO[bytes]]:
    """The arrays as one .npz, in memory when small and in a temporary file past 64 MiB."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.seek(0)
        yield f


@contextmanager
def _files_for_path(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], columns: Mapping[str, str] | None = None
) -> Iterator[Any]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    opened: list[IO[bytes]] = []
    try:
        if len(paths) == 1 and not os.fspath(paths[0]).endswith(".npy"):
            f: IO[bytes] = open(paths[0], "rb")  # closed in the finally below
            opened.append(f)
            files: Any = [("file", (os.path.basename(os.fspath(paths[0])), f, "application/octet-stream"))]
            if columns:
                files.append(("columns", (None, json.dumps(dict(columns)))))
            yield files
            return
        if columns:
            raise ValueError("columns= applies to one .npz/.parquet file; .npy files are named after their keys")
        files = []
        for p in paths:
            name = os.path.basename(os.fspath(p))
            if not name.endswith(".npy"):
                raise ValueError(
                    f"{p}: with several files, each must be a .npy named after its key (embeddings.npy, ...)"
                )
            f = open(p, "rb")  # closed in the finally below
            opened.append(f)
            files.append((name[: -len(".npy")], (name, f, "application/octet-stream")))
        yield files
    finally:
        for f in opened:
            f.close()


# ----- progress -----
@contextmanager
def _progress_bar(enabled: bool, job_id: str) -> Iterator[Any]:
    """A callable(status) that draws the job's progress: rich, else tqdm, else nothing."""
    if not enabled:
        yield lambda status: None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
    except ImportError:
        rich_ok = False
    else:
        rich_ok = True
    if rich_ok:
        with Progress(  # on stderr: stdout is for results (a table, or JSON a pipeline reads)
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            transient=False,
            console=Console(stderr=True),
        ) as bar:
            task = bar.add_task(job_id, total=1.0, detail="queued")

            def update(status: dict[str, Any]) -> None:
                bar.update(task, completed=_fraction(status), detail=_detail(status))

            yield update
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda status: None
        return
    with tqdm(total=1000, desc=job_id, unit="‰") as tq:

        def update_tq(status: dict[str, Any]) -> None:
            tq.n = int(1000 * _fraction(status))
            tq.set_postfix_str(_detail(status))
            tq.refresh()

        yield update_tq


def _fraction(status: dict[str, Any]) -> float:
    if status.get("status") == "finished":
        return 1.0
    try:
        return min(1.0, max(0.0, float((status.get("progress") or {}).get("fraction", 0.0))))
    except (TypeError, ValueError):
        return 0.0


def _detail(status: dict[str, Any]) -> str:
    state = str(status.get("status", "?"))
    p = status.get("progress") or {}
    if state == "running" and p.get("n_spotlights"):
        return f"spotlight {p.get('spotlight', 0)}/{p['n_spotlights']} step {p.get('step', 0)}/{p.get('steps', 0)}"
    if state == "queued" and p.get("spotlight") and p.get("n_spotlights"):
        # it gave its worker to another tenant's job between regions and waits for its next turn
        return f"queued, {p['spotlight']}/{p['n_spotlights']} spotlights done"
    return state
