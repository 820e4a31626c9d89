"""The client's side of a comparison (`SpotlightClient.compare`): the stored document and DataFrames.

numpy/httpx-free: it holds the JSON the API returned; pandas is imported only when a DataFrame is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from spotlight.client import tables
from spotlight.contract import compare


class _Requests(Protocol):
    """What a comparison asks of its client (spotlight/client/api.py's SpotlightClient, which imports this)."""

    def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...


class Comparison:
    """A stored comparison (``GET /v1/comparisons/{id}``): `document` is its JSON.

    ``frame()`` is one row per weak spot (two jobs: status, significant, the old and new region, the
    members' loss and lift before and after with the honest side's interval) or per region (a
    dataset: the share of new rows against the original share, the ratio's interval, drift);
    ``examples_frame()`` the members shown per weak spot with their loss under each model."""

    def __init__(self, client: _Requests, document: Mapping[str, Any]) -> None:
        self._client = client
        self.document = dict(document)

    def __repr__(self) -> str:
        return f"Comparison({self.id!r}, kind={self.document.get('kind')!r}, counts={self.document.get('counts')})"

    @property
    def id(self) -> str:
        return str(self.document["id"])

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.document.get("counts") or {})

    def rows(self) -> list[dict[str, Any]]:
        return compare.rows_of(self.document)

    def frame(self) -> Any:
        return tables.pandas().DataFrame(self.rows())

    def examples_frame(self) -> Any:
        rows = []
        for k, spot in enumerate(self.document.get("weak_spots") or []):
            for e in spot.get("examples") or []:
                rows.append({"weak_spot": k, "status": spot["status"], **{c: e.get(c) for c in _EXAMPLE_COLUMNS}})
        return tables.pandas().DataFrame(rows, columns=["weak_spot", "status", *_EXAMPLE_COLUMNS])

    def report(self) -> str:
        """The comparison's HTML page (both sides of each weak spot)."""
        return self._client._request("GET", f"/v1/comparisons/{self.id}/report").text


_EXAMPLE_COLUMNS = ("id", "old_row", "new_row", "loss_before", "loss_after", "metadata")
