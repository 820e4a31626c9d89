"""Datasets the server reads itself from a URI, only where the operator allows.

`_open_reference` is the one place a URI becomes bytes. It is a stand-in until the security
helper's `spotlight.refs.open_reference` lands (same signature, same two exceptions); swapping
is one line. The stand-in reads `file://` paths that resolve (symlinks followed) inside
`settings.allowed_roots`, and other schemes listed in `settings.allowed_schemes` through fsspec,
except http(s), which needs the SSRF checks that module brings.
"""

from __future__ import annotations

import os
from typing import IO
from urllib.parse import unquote, urlparse

from service.errors import ApiError
from spotlight.protocol import ErrorCode
from spotlight.settings import Settings

COPY_CHUNK = 1024 * 1024


class ReferenceRefused(Exception):
    """The URI is outside what the operator allows (scheme, root, host)."""


class ReferenceUnreadable(Exception):
    """The URI is allowed but could not be read (missing, not a file, I/O error)."""


def _open_reference(uri: str, settings: Settings) -> tuple[IO[bytes], int, str]:
    """Open an allowed reference: (binary file object, size in bytes, file name)."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme not in [s.lower() for s in settings.allowed_schemes]:
        raise ReferenceRefused(f"scheme {scheme or '(none)'!r} is not allowed; allowed: {settings.allowed_schemes}")
    name = os.path.basename(unquote(parsed.path)) or "reference"
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ReferenceRefused("file:// references must name a local path (file:///…)")
        roots = [os.path.realpath(r) for r in settings.allowed_roots]
        if not roots:
            raise ReferenceRefused("this server allows no file:// roots (SPOTLIGHT_ALLOWED_ROOTS)")
        real = os.path.realpath(unquote(parsed.path))
        if not any(os.path.commonpath([real, root]) == root for root in roots):
            raise ReferenceRefused("the path is outside the allowed roots")
        if not os.path.isfile(real):
            raise ReferenceUnreadable("no such file")
        try:
            f = open(real, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise ReferenceUnreadable(f"cannot open: {exc.strerror}") from None
        return f, os.fstat(f.fileno()).st_size, name
    if scheme in ("http", "https"):
        raise ReferenceRefused("http(s) references are not enabled on this server")
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        size = int(fs.size(path))
        return fs.open(path, "rb"), size, name
    except (OSError, ValueError, ImportError) as exc:
        raise ReferenceUnreadable(f"cannot read: {exc}") from None


def fetch_reference(uri: str, settings: Settings, work_dir: str) -> str:
    """Copy an allowed reference into the work folder (capped at the upload limit); return the path."""
    try:
        f, size, _name = _open_reference(uri, settings)
    except ReferenceRefused as exc:
        raise ApiError(400, ErrorCode.REFERENCE_REFUSED, f"Reference refused: {exc}", {"uri": uri}) from None
    except ReferenceUnreadable as exc:
        raise ApiError(400, ErrorCode.REFERENCE_UNREADABLE, f"Reference unreadable: {exc}", {"uri": uri}) from None
    limit = settings.max_upload_bytes
    with f:
        if size > limit:
            raise ApiError(413, ErrorCode.TOO_LARGE, f"The referenced file has {size} bytes, over the limit of {limit}",
                           {"size_bytes": size, "limit_bytes": limit})
        dest = os.path.join(work_dir, "reference")
        copied = 0
        with open(dest, "wb") as out:
            while True:
                block = f.read(COPY_CHUNK)
                if not block:
                    break
                copied += len(block)
                if copied > limit:
                    raise ApiError(413, ErrorCode.TOO_LARGE, f"The referenced file grew past the limit of {limit}",
                                   {"limit_bytes": limit})
                out.write(block)
    return dest


__all__ = ["ReferenceRefused", "ReferenceUnreadable", "_open_reference", "fetch_reference"]
