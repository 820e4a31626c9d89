"""Open a dataset named by reference (``{"uri": ...}``) — inside the operator's sandbox only.

A reference makes the server read something on the caller's behalf, so it is the easiest way for
a caller to reach what it must not: other tenants' files, the server's own secrets, cloud
metadata, the private network. The rules, all from :class:`~spotlight.server.settings.Settings`:

``file://``
    Only when ``"file"`` is in ``allowed_schemes``, and only under ``allowed_roots``. The path is
    resolved with ``realpath`` (so ``..`` and symlinks are followed to where they really lead) and
    must then lie inside a resolved root, compared by path components, not by string prefix
    (``/data/rootevil`` is not inside ``/data/root``). Paths with ``..`` are refused outright.
    Between the check and the open an attacker with write access to a root could swap a
    component for a symlink, so the file is opened with ``O_NOFOLLOW`` and the descriptor's real
    path (``/proc/self/fd``, or device + inode elsewhere) is checked again after opening. Only
    regular files are read (no FIFOs or devices).
``http://``, ``https://``
    Only when the scheme is in ``allowed_schemes`` *and* the host passes
    :func:`spotlight.server.netguard.check_url` (allow-listed host, no private addresses, every redirect
    checked again, connection pinned to the checked address).
other fsspec schemes (``s3://``, ``gs://``, ...)
    Only when listed in ``allowed_schemes`` and their filesystem package is installed. Chained
    URLs (``a::b``) and wrapper or local filesystems (zip, cache, ``local://``) are never
    accepted: they would read local files around the roots.

Anything larger than ``max_upload_bytes`` is refused before its bytes are read
(:class:`ReferenceTooLarge`, code ``payload_too_large``). An http(s) download is counted on the
wire (no decoding: a ``Content-Encoding`` is refused) and ends at ``reference_timeout_s`` in total,
however slowly the server sends. These are domain errors (spotlight/contract/errors.py); the API's edge
decides their HTTP status.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx

from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import ErrorCode
from spotlight.server.netguard import Deadline, Resolver, URLRefused, guarded_request, redact_url
from spotlight.server.settings import Settings

# fsspec protocols that wrap or alias other filesystems (and so could read local files around the
# roots) or talk HTTP without the guard; never accepted even if an operator lists them.
_NEVER_FSSPEC = frozenset(
    {
        "file",
        "local",
        "http",
        "https",
        "zip",
        "tar",
        "libarchive",
        "simplecache",
        "filecache",
        "blockcache",
        "cached",
        "reference",
        "dir",
        "jlab",
        "jupyter",
        "data",
        "ssh",
        "sftp",
    }
)
_DOWNLOAD_CHUNK = 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


class BadReference(InvalidInput):
    """A reference the server will not or cannot read: a domain error with the contract's code."""

    default_code = ErrorCode.REFERENCE_UNREADABLE

    def __init__(self, message: str, *, uri: str, reason: str, **details: Any) -> None:
        super().__init__(self.default_code, message, {"uri": redact_url(uri), "reason": reason, **details})
        self.uri = uri
        self.reason = reason


class ReferenceRefused(BadReference):
    """The caller named something outside the sandbox: scheme, root, host or address not allowed."""

    default_code = ErrorCode.REFERENCE_REFUSED


class ReferenceTooLarge(ReferenceRefused):
    """The referenced object is larger than ``max_upload_bytes`` (code payload_too_large)."""

    default_code = ErrorCode.TOO_LARGE


class ReferenceUnreadable(BadReference):
    """Allowed, but missing or unreadable (not found, permission denied, not a file, HTTP error)."""

    default_code = ErrorCode.REFERENCE_UNREADABLE


@dataclass
class OpenedReference:
    """An open binary file (seekable for file:// and http(s)://) and what ingestion needs to know.

    ``name`` is the last path component the caller named and ``suffix`` its lower-case extension
    (``.npz``, ``.parquet``, ``.npy``), for picking the reader. Close it (or use ``with``).
    """

    file: IO[bytes]
    size: int
    name: str
    suffix: str
    uri: str

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> OpenedReference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _opened(file: IO[bytes], size: int, name: str, uri: str) -> OpenedReference:
    return OpenedReference(file=file, size=size, name=name, suffix=PurePosixPath(name).suffix.lower(), uri=uri)


def _check_size(size: int, uri: str, settings: Settings) -> None:
    if size > settings.max_upload_bytes:
        raise ReferenceTooLarge(
            f"the referenced object is {size} bytes; this server accepts at most {settings.max_upload_bytes}",
            uri=uri,
            reason="too_large",
            size=size,
            limit=settings.max_upload_bytes,
        )


def open_reference(uri: str, settings: Settings, *, resolver: Resolver | None = None) -> OpenedReference:
    """Open `uri` for binary reading if the operator's sandbox allows it.

    Raises :class:`ReferenceRefused` (or its :class:`ReferenceTooLarge`) for what the caller may
    not read, :class:`ReferenceUnreadable` for what is allowed but cannot be read.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ReferenceRefused(
            "the reference is empty; give a URI such as file:///data/x.npz", uri=str(uri), reason="malformed"
        )
    if "\x00" in uri:
        raise ReferenceRefused("the reference contains a NUL character", uri=uri, reason="malformed")
    if "::" in uri.split("?", 1)[0] and not uri.lower().startswith(("http://[", "https://[")):
        raise ReferenceRefused("chained references (a::b) are not accepted", uri=uri, reason="scheme")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ReferenceRefused(f"malformed reference ({exc})", uri=uri, reason="malformed") from exc
    scheme = parts.scheme.lower()
    allowed = [s.lower() for s in settings.allowed_schemes]
    if not scheme or len(scheme) == 1:  # no scheme, or a Windows drive letter
        raise ReferenceRefused(
            "the reference has no scheme; give a URI such as file:///data/x.npz", uri=uri, reason="scheme"
        )
    if scheme not in allowed:
        raise ReferenceRefused(
            f"scheme {scheme!r} is not allowed on this server (allowed: {', '.join(allowed) or 'none'})",
            uri=uri,
            reason="scheme",
            allowed_schemes=allowed,
        )
    if scheme == "file":
        return _open_file(uri, parts.netloc, parts.path, settings)
    if scheme in ("http", "https"):
        return _open_http(uri, settings, resolver)
    return _open_fsspec(uri, scheme, settings)


# ----- file:// -----
def _real_roots(settings: Settings) -> list[str]:
    return [os.path.realpath(os.path.abspath(os.path.expanduser(r))) for r in settings.allowed_roots if r]


def _inside(path: str, root: str) -> bool:
    """Component-wise containment of two normalised absolute paths."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _open_file(uri: str, netloc: str, raw_path: str, settings: Settings) -> OpenedReference:
    def refused(message: str, reason: str = "outside_roots") -> ReferenceRefused:
        return ReferenceRefused(message, uri=uri, reason=reason)

    if netloc not in ("", "localhost"):
        raise refused(f"file:// references name a path on this server; host {netloc!r} is not accepted", "malformed")
    path = unquote(raw_path)
    if "\x00" in path:
        raise refused("the path contains a NUL character", "malformed")
    if not path.startswith("/"):
        raise refused("file:// references need an absolute path (file:///data/x.npz)", "malformed")
    if ".." in PurePosixPath(path).parts:
        raise refused("paths with '..' are not accepted")
    roots = _real_roots(settings)
    if not roots:
        raise refused("this server reads no local files (the operator sets SPOTLIGHT_ALLOWED_ROOTS)")
    real = os.path.realpath(path)
    root = next((r for r in roots if _inside(real, r)), None)
    if root is None:
        raise refused("the path is outside the folders this server may read")

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError as exc:
        raise ReferenceUnreadable("no such file", uri=uri, reason="not_found") from exc
    except PermissionError as exc:
        raise ReferenceUnreadable("the server may not read this file", uri=uri, reason="permission") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component became a symlink after the check
            raise refused("the path changed into a symbolic link while it was opened") from exc
        raise ReferenceUnreadable(f"cannot open the file ({exc.strerror})", uri=uri, reason="io") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReferenceUnreadable("the path is not a regular file", uri=uri, reason="not_a_file")
        # Re-check where the descriptor really points: a directory on the way may have been
        # swapped for a symlink between realpath() and open().
        opened_path = _fd_path(fd)
        if opened_path is not None:
            if not _inside(opened_path, root):
                raise refused("the path moved outside the allowed folders while it was opened")
        else:
            try:
                now = os.stat(real, follow_symlinks=False)
            except OSError as exc:
                raise refused("the path changed while it was opened") from exc
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise refused("the path changed while it was opened")
        _check_size(st.st_size, uri, settings)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return _opened(file, st.st_size, PurePosixPath(path).name, uri)


# ----- http(s):// -----
def _open_http(uri: str, settings: Settings, resolver: Resolver | None) -> OpenedReference:
    """Download within the byte budget and the total deadline, counting bytes as they arrive.

    The body is read raw (`iter_raw`): nothing decodes it, so what is counted is what came over
    the wire and what is stored. A response with a `Content-Encoding` is refused: a few KB of
    gzip (stacked twice) can inflate to gigabytes, and a dataset file gains nothing from it.
    """
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    deadline = Deadline(settings.reference_timeout_s)
    try:
        with (
            deadline,
            guarded_request(
                "GET",
                uri,
                settings,
                "reference",
                resolver=resolver,
                headers={"Accept-Encoding": "identity"},
                deadline=deadline,
            ) as response,
        ):
            if response.status_code != 200:
                raise ReferenceUnreadable(
                    f"the server at the reference answered HTTP {response.status_code}",
                    uri=uri,
                    reason="http_status",
                    status=response.status_code,
                )
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise ReferenceRefused(
                    f"the server sent the file with Content-Encoding {encoding[:100]!r}; references are read "
                    "as they are stored (identity), so compressed transfers are refused",
                    uri=uri,
                    reason="content_encoding",
                    content_encoding=encoding[:100],
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit():
                _check_size(int(declared), uri, settings)
            size = 0
            for chunk in response.iter_raw(_DOWNLOAD_CHUNK):
                size += len(chunk)
                _check_size(size, uri, settings)
                if deadline.expired:
                    raise httpx.ReadTimeout("deadline")
                spool.write(chunk)
            name = PurePosixPath(unquote(response.request.url.path)).name or "reference"
    except URLRefused as exc:
        spool.close()
        raise ReferenceRefused(exc.message, uri=uri, reason=exc.reason) from exc
    except httpx.HTTPError as exc:
        spool.close()
        if deadline.expired:
            raise ReferenceUnreadable(
                f"the reference did not arrive within {settings.reference_timeout_s:g} s "
                "(SPOTLIGHT_REFERENCE_TIMEOUT_S)",
                uri=uri,
                reason="timeout",
                limit_s=settings.reference_timeout_s,
            ) from exc
        raise ReferenceUnreadable(
            f"cannot fetch the reference ({type(exc).__name__}: {exc})", uri=uri, reason="network"
        ) from exc
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return _opened(spool, size, name, uri)


# ----- s3://, gs://, ... through fsspec -----
def _open_fsspec(uri: str, scheme: str, settings: Settings) -> OpenedReference:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if scheme in _NEVER_FSSPEC:
        raise ReferenceRefused(f"scheme {scheme!r} is never accepted for references", uri=uri, reason="scheme")
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except (ValueError, ImportError) as exc:
        raise ReferenceRefused(
            f"scheme {scheme!r} is allowed but not available on this server ({exc})", uri=uri, reason="scheme"
        ) from exc
    if issubclass(cls, LocalFileSystem):
        raise ReferenceRefused(f"scheme {scheme!r} reads local files; use file://", uri=uri, reason="scheme")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise ReferenceUnreadable("no such object", uri=uri, reason="not_found") from exc
    except PermissionError as exc:
        raise ReferenceUnreadable("the server may not read this object", uri=uri, reason="permission") from exc
    except Exception as exc:  # each filesystem raises its own errors
        raise ReferenceUnreadable(
            f"cannot read the reference ({type(exc).__name__}: {exc})", uri=uri, reason="io"
        ) from exc
    if info.get("type") != "file":
        raise ReferenceUnreadable("the reference is not a file", uri=uri, reason="not_a_file")
    size = int(info.get("size") or 0)
    _check_size(size, uri, settings)
    try:
        file = fs.open(path, "rb")
    except Exception as exc:
        raise ReferenceUnreadable(
            f"cannot open the reference ({type(exc).__name__}: {exc})", uri=uri, reason="io"
        ) from exc
    return _opened(file, size, PurePosixPath(path).name, uri)
