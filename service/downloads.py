"""A stored .npy as an HTTP download (the weights of a job, the PCA basis of its regions)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import StreamingResponse

from spotlight.server.store import ArtifactStore

STREAM_CHUNK = 1024 * 1024


def npy_download(store: ArtifactStore, path: str, filename: str) -> StreamingResponse:
    """A stored .npy streamed as an attachment (never read whole into the API's memory)."""
    return StreamingResponse(
        _stream(store, path),
        media_type="application/x-npy",
        headers={"Content-Length": str(store.size(path)), "Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _stream(store: ArtifactStore, path: str) -> Iterator[bytes]:
    with store.open_read(path) as f:
        while block := f.read(STREAM_CHUNK):
            yield block
