"""Datasets the server reads itself from a URI, only where the operator allows.

`_open_reference` is the one place a URI becomes bytes; it is `spotlight.server.refs.open_reference`,
the sandbox (allowed roots with symlink and TOCTOU checks, allowed schemes, SSRF-guarded http(s),
size checked before reading). Its refusals keep their own code (`reference_refused`,
`payload_too_large`, `reference_unreadable`); service/errors.py gives each its HTTP status.
"""

from __future__ import annotations

import os

from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import ErrorCode
from spotlight.server.refs import BadReference, ReferenceRefused, ReferenceUnreadable
from spotlight.server.refs import open_reference as _open_reference
from spotlight.server.refusal_hints import hinted
from spotlight.server.settings import Settings

COPY_CHUNK = 1024 * 1024


def fetch_reference(uri: str, settings: Settings, work_dir: str) -> str:
    """Copy an allowed reference into the work folder (capped at the upload limit); return the path."""
    try:
        ref = _open_reference(uri, settings)
    except BadReference as exc:
        message, details = hinted(f"Reference {exc.uri!r}: {exc.message}", exc.details)
        raise InvalidInput(exc.code, message, details) from None
    limit = settings.max_upload_bytes
    with ref:
        dest = os.path.join(work_dir, "reference")
        copied = 0
        with open(dest, "wb") as out:
            while True:
                try:
                    block = ref.file.read(COPY_CHUNK)
                except OSError as exc:
                    raise ReferenceUnreadable(
                        f"Reference {uri!r}: reading failed ({exc})", uri=uri, reason="io"
                    ) from None
                if not block:
                    break
                copied += len(block)
                if copied > limit:  # a file that grew after its size was checked
                    raise TooLarge(
                        ErrorCode.TOO_LARGE,
                        f"The referenced file grew past the limit of {limit}",
                        {"limit_bytes": limit},
                    )
                out.write(block)
    return dest


__all__ = ["ReferenceRefused", "ReferenceUnreadable", "_open_reference", "fetch_reference"]
