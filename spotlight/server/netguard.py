"""Outbound-request guard: which URLs the service may fetch (references) or call (webhooks).

The service runs next to other tenants' data and an operator's internal network, and it makes
HTTP requests to URLs that callers name. Without a guard a caller could make it read cloud metadata
(169.254.169.254), the embedded Redis on loopback, or anything on the private network (SSRF).
So an outbound URL passes only when all of these hold:

- its scheme is http or https;
- its host is on ``settings.allowed_hosts`` (exact names, or ``*.example.com`` for subdomains);
- every address the host resolves to is public — never loopback, link-local, private, shared,
  reserved, multicast or unspecified — unless ``settings.allow_private_addresses`` says otherwise.
  IP literals are parsed the way the C resolver would read them (``2130706433``, ``0x7f.1``,
  ``0177.0.0.1``, ``127.1``), and IPv6 forms that embed an IPv4 address (``::ffff:127.0.0.1``,
  6to4, Teredo, NAT64) are judged by the address they embed.

Checking a name and then letting the HTTP client resolve it again would leave a DNS-rebinding
window, so :func:`guarded_request` connects to the very address that was checked (the original host
travels in the ``Host`` header and, for https, in SNI and certificate checks), never follows
redirects on its own, and checks each redirect target like the first URL.

Name resolution is injectable (``resolver=``) so tests can map a name onto a loopback server.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from spotlight.server.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses it resolves to (strings, as getaddrinfo gives them)
Resolver = Callable[[str, int], list[str]]
Purpose = Literal["reference", "callback"]

MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# Names that mean "this machine" whatever DNS says.
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6"}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class URLRefused(ValueError):
    """An outbound URL the service will not fetch or call. ``reason`` is a short machine word."""

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.reason = reason

    def details(self) -> dict[str, str]:
        return {"url": redact_url(self.url), "reason": self.reason}


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the guard, with the addresses it may be reached at."""

    url: str
    scheme: str
    host: str  # lower-case, IDNA-encoded, no trailing dot, no brackets
    port: int
    addresses: list[IPAddress] = field(default_factory=list)


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# ----- IP literals -----
def _parse_ipv4_part(part: str) -> int:
    """One component as inet_aton reads it: 0x.. hex, 0.. octal, else decimal."""
    if not part:
        raise ValueError("empty component")
    lower = part.lower()
    if lower.startswith("0x"):
        return int(lower[2:], 16)  # "0x" alone is not a number to inet_aton either
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    if not part.isdigit():
        raise ValueError("not a number")
    return int(part, 10)


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Read `host` as the C library's inet_aton would (1 to 4 parts, each decimal, octal or hex,
    the last filling the remaining bytes), or return None when it is not an IPv4 literal.

    Browsers, curl and getaddrinfo all accept these spellings, so the guard must see through them.
    """
    parts = host.split(".")
    if host.endswith("."):
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    try:
        values = [_parse_ipv4_part(p) for p in parts]
    except ValueError:
        return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells directly (any IPv4 spelling, or IPv6 with or without brackets)."""
    bare = host.strip("[]")
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4_loose(bare)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_forbidden_address(address: IPAddress) -> bool:
    """True for any address that is not plainly public: loopback, private, link-local, shared
    (100.64/10), reserved, multicast, unspecified (0.0.0.0, ::), documentation ranges, and IPv6
    forms embedding such an IPv4 address."""
    inner = embedded_ipv4(address)
    if inner is not None and is_forbidden_address(inner):
        return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


# ----- host allow-list -----
def _normalise_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    literal = parse_ip_literal(host)
    if literal is not None:
        return str(literal)
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """Exact match, or a ``*.domain`` entry matching any subdomain (not the domain itself)."""
    host = _normalise_host(host)
    for entry in allowed_hosts:
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("*."):
            suffix = _normalise_host(entry[2:])
            if host.endswith("." + suffix):
                return True
        elif host == _normalise_host(entry):
            return True
    return False


def _is_local_name(host: str) -> bool:
    return host in _LOCAL_NAMES or host.endswith(".localhost")


def redact_url(url: str) -> str:
    """The URL without credentials, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


# ----- the checks -----
def check_url(
    url: str,
    settings: Settings,
    purpose: Purpose = "reference",
    *,
    resolver: Resolver | None = None,
) -> CheckedURL:
    """Return the checked URL with its resolved addresses, or raise :class:`URLRefused`."""
    what = "reference" if purpose == "reference" else "callback_url"

    def refuse(message: str, reason: str) -> URLRefused:
        return URLRefused(f"{what} refused: {message}", url=url, reason=reason)

    if not isinstance(url, str) or not url:
        raise refuse("empty URL", "malformed")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        # Parsers disagree on backslashes and control characters; refuse instead of guessing.
        raise refuse("the URL contains whitespace, control characters or backslashes", "malformed")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"malformed URL ({exc})", "malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse(f"scheme {scheme or '(none)'!r} is not allowed; use http or https", "scheme")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise refuse("the URL has no host", "malformed")
    host = _normalise_host(raw_host)
    port = port or (443 if scheme == "https" else 80)

    # The client that will make the request must see the same host we checked.
    # (IP literals are exempt: the request goes to the address we parse, however spelled.)
    if parse_ip_literal(raw_host) is None:
        try:
            client_host = _normalise_host(httpx.URL(url).host)
        except Exception as exc:  # httpx.InvalidURL and friends
            raise refuse(f"malformed URL ({exc})", "malformed") from exc
        if client_host != host:
            raise refuse("the URL's host is ambiguous", "malformed")

    private_ok = settings.allow_private_addresses
    if _is_local_name(host) and not private_ok:
        raise refuse(f"host {host!r} is this machine", "private_address")
    if not settings.allowed_hosts:
        raise refuse(
            "no hosts are allowed on this server (the operator sets SPOTLIGHT_ALLOWED_HOSTS)", "host_not_allowed"
        )
    if not host_allowed(host, settings.allowed_hosts):
        raise refuse(f"host {host!r} is not on this server's allow-list", "host_not_allowed")

    literal = parse_ip_literal(raw_host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            resolved = (resolver or default_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            raise refuse(f"host {host!r} does not resolve ({exc})", "unresolvable") from exc
        addresses = []
        for text in resolved:
            try:
                addr = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue
            if addr not in addresses:
                addresses.append(addr)
        if not addresses:
            raise refuse(f"host {host!r} does not resolve", "unresolvable")
    if not private_ok:
        bad = [str(a) for a in addresses if is_forbidden_address(a)]
        if bad:
            raise refuse(
                f"host {host!r} resolves to a loopback, private or reserved address ({', '.join(bad)})",
                "private_address",
            )
    return CheckedURL(url=url, scheme=scheme, host=host, port=port, addresses=addresses)


def check_callback_url(url: str, settings: Settings, *, resolver: Resolver | None = None) -> CheckedURL:
    """The check a job's `callback_url` must pass at submission (the API answers 400 otherwise)
    and again at delivery (a name may resolve elsewhere by then)."""
    return check_url(url, settings, "callback", resolver=resolver)


# ----- making the request -----
def _pinned_request(
    client: httpx.Client, method: str, checked: CheckedURL, address: IPAddress, headers: dict[str, str], **kwargs: Any
) -> httpx.Request:
    """A request that connects to `address` but presents `checked.host` (Host header, SNI, cert)."""
    parts = urlsplit(checked.url)
    ip_host = f"[{address}]" if address.version == 6 else str(address)
    pinned = parts._replace(netloc=f"{ip_host}:{checked.port}", fragment="").geturl()
    default_port = 443 if checked.scheme == "https" else 80
    name = f"[{checked.host}]" if ":" in checked.host else checked.host
    host_header = name if checked.port == default_port else f"{name}:{checked.port}"
    extensions = {
        **kwargs.pop("extensions", {}),
        **({"sni_hostname": checked.host} if checked.scheme == "https" else {}),
    }
    return client.build_request(
        method, pinned, headers={**headers, "Host": host_header}, extensions=extensions, **kwargs
    )


class Deadline:
    """A total time limit on one outbound exchange, enforced even against a peer that trickles.

    httpx's timeouts bound each read, so a server sending a byte every few seconds never trips
    them. Each TCP connection the request opens is recorded (through httpcore's documented
    ``trace`` extension), and when the deadline passes a timer shuts those sockets down: the
    blocked read returns at once with an error, whatever the peer does.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self.expired = False
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self.ends_at - time.monotonic())

    def timeout(self, base: httpx.Timeout) -> httpx.Timeout:
        """`base` with each phase capped at the time left (so connecting cannot outlive it either)."""
        left = max(self.remaining(), 0.001)

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(connect=cap(base.connect), read=cap(base.read), write=cap(base.write), pool=cap(base.pool))

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._streams.append(info.get("return_value"))
                expired = self.expired
            if expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


@contextmanager
def guarded_request(
    method: str,
    url: str,
    settings: Settings,
    purpose: Purpose,
    *,
    resolver: Resolver | None = None,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
    max_redirects: int = MAX_REDIRECTS,
    deadline: Deadline | None = None,
    **kwargs: Any,
) -> Iterator[httpx.Response]:
    """Send one request through the guard and yield the (streamed, unread) final response.

    Every hop — the URL and each redirect target — is checked by :func:`check_url` and connected
    to at a checked address. Redirects are followed only for GET/HEAD. With a `deadline`, the whole
    exchange (connecting, every hop, and the caller's reading of the body inside the ``with``) ends
    when it passes. Raises :class:`URLRefused` or an ``httpx.HTTPError``; the caller reads and
    judges the status code.
    """
    headers = dict(headers or {})
    if deadline is not None:
        timeout = deadline.timeout(timeout)
        kwargs["extensions"] = {**kwargs.get("extensions", {}), "trace": deadline.trace}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, transport=transport) as client:
        current = url
        for _hop in range(max_redirects + 1):
            checked = check_url(current, settings, purpose, resolver=resolver)
            response: httpx.Response | None = None
            last_error: Exception | None = None
            for address in checked.addresses:
                if deadline is not None and deadline.expired:
                    raise httpx.ReadTimeout(f"the {purpose} took longer than {deadline.seconds:g} s")
                request = _pinned_request(client, method, checked, address, headers, **kwargs)
                try:
                    response = client.send(request, stream=True)
                    break
                except httpx.ConnectError as exc:  # try the host's next address
                    last_error = exc
            if response is None:
                assert last_error is not None
                raise last_error
            if response.is_redirect and method.upper() in ("GET", "HEAD"):
                location = response.headers.get("location", "")
                response.close()
                # Resolve relative redirects against the URL the caller named, not the pinned IP.
                current = str(httpx.URL(current).join(location))
                continue
            try:
                yield response
            finally:
                response.close()
            return
        raise URLRefused(f"{purpose} refused: more than {max_redirects} redirects", url=url, reason="redirects")
