"""A multipart/form-data body streamed straight to files in the upload's work folder.

Starlette's own form parser would also spool file parts to disk, but into the system temp
folder, through SpooledTemporaryFile (so np.load cannot memory-map them), with no total-size cap
and a 1 MB cap on non-file fields that a `.npy` part sent without a filename would hit. Parsing
here with python-multipart directly lets every part, file or not, go to a named file next to the
store, lets the upload limit cut the stream off as soon as the parts pass it, and keeps memory flat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import ErrorCode

MAX_PARTS = 16
# RFC 2046 allows 70 characters; python-multipart accepts up to 256 and raises past that.
MAX_BOUNDARY = 256


@dataclass
class Part:
    name: str
    filename: str | None
    path: str
    size: int = 0
    headers: dict[str, str] = field(default_factory=dict)


async def receive_multipart(request: Request, work_dir: str, max_bytes: int) -> list[Part]:
    """Write each part to `work_dir`; 413 once the parts' bytes pass `max_bytes`, 400 when malformed."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput(ErrorCode.VALIDATION, "multipart body without a boundary in its Content-Type")
    if len(boundary) > MAX_BOUNDARY:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"the multipart boundary is {len(boundary)} characters; at most {MAX_BOUNDARY} are accepted "
            "(RFC 2046 allows 70)",
            {"boundary_length": len(boundary), "limit": MAX_BOUNDARY},
        )

    parts: list[Part] = []
    current: dict[str, object] = {}
    header_name = bytearray()
    header_value = bytearray()
    out: IO[bytes] | None = None
    total = 0
    ended = False

    def on_part_begin() -> None:
        current.clear()
        current["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers = current["headers"]
        assert isinstance(headers, dict)
        headers[header_name.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal out
        headers = current["headers"]
        assert isinstance(headers, dict)
        _, opts = parse_options_header(headers.get("content-disposition", ""))
        name = opts.get(b"name")
        if not name:
            raise InvalidInput(ErrorCode.VALIDATION, "a multipart part has no name in its Content-Disposition")
        if len(parts) >= MAX_PARTS:
            raise InvalidInput(ErrorCode.VALIDATION, f"too many parts; at most {MAX_PARTS}")
        filename = opts.get(b"filename")
        path = os.path.join(work_dir, f"part-{len(parts)}")
        parts.append(
            Part(
                name=name.decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                path=path,
                headers=dict(headers),
            )
        )
        out = open(path, "wb")  # noqa: SIM115 - closed in on_part_end or below

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal total
        size = end - start
        total += size
        if total > max_bytes:
            raise TooLarge(
                ErrorCode.TOO_LARGE,
                f"The upload is larger than this server's limit of {max_bytes} bytes.",
                {"limit_bytes": max_bytes},
            )
        assert out is not None
        out.write(data[start:end])
        parts[-1].size += size

    def on_part_end() -> None:
        nonlocal out
        if out is not None:
            out.close()
            out = None

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(ErrorCode.BAD_FILE, f"the multipart body is malformed ({exc})") from None
    finally:
        if out is not None:
            out.close()
    if not ended:
        raise InvalidInput(ErrorCode.BAD_FILE, "the multipart body ended before its closing boundary (truncated?)")
    return parts
