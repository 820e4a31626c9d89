"""The outbound-URL guard: SSRF through callback URLs and http(s) references is refused."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from spotlight.server.netguard import (
    URLRefused,
    check_callback_url,
    check_url,
    guarded_request,
    host_allowed,
    parse_ipv4_loose,
)
from spotlight.server.settings import Settings


def settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def fixed_resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "spelling",
    ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "127.0.0.1", "0x7F.0.0.0x1", "127.0.1", "0"],
)
def test_ipv4_spellings_are_read_like_inet_aton(spelling: str) -> None:
    assert str(parse_ipv4_loose(spelling)) == socket.inet_ntoa(socket.inet_aton(spelling))


@pytest.mark.parametrize("not_ip", ["example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.0x100", "0x", "1..2", "08.1.1.1"])
def test_non_ip_hosts_are_not_read_as_ip(not_ip: str) -> None:
    assert parse_ipv4_loose(not_ip) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.0.10:8080/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a00:1]/",
        "https://[::1]:6379/",
    ],
)
def test_private_and_special_addresses_are_refused_even_when_allow_listed(url: str) -> None:
    host = urlsplit(url).hostname
    with pytest.raises(URLRefused) as info:
        check_callback_url(url, settings(allowed_hosts=[host]))
    assert info.value.reason == "private_address"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "api.localhost", "localhost.localdomain", "ip6-localhost"])
def test_localhost_names_are_refused_whatever_dns_says(host: str) -> None:
    resolver = fixed_resolver({host.lower().rstrip("."): ["93.184.216.34"]})
    with pytest.raises(URLRefused) as info:
        check_url(f"http://{host}/", settings(allowed_hosts=[host]), resolver=resolver)
    assert info.value.reason == "private_address"


def test_a_name_resolving_to_any_private_address_is_refused() -> None:
    resolver = fixed_resolver({"hooks.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(URLRefused) as info:
        check_callback_url(
            "https://hooks.example.com/cb", settings(allowed_hosts=["hooks.example.com"]), resolver=resolver
        )
    assert info.value.reason == "private_address"
    assert "10.0.0.7" in str(info.value)


def test_an_allow_listed_public_host_passes_with_its_addresses() -> None:
    resolver = fixed_resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    checked = check_callback_url(
        "https://Hooks.Example.com./cb?x=1", settings(allowed_hosts=["hooks.example.com"]), resolver=resolver
    )
    assert checked.host == "hooks.example.com"
    assert checked.port == 443
    assert [str(a) for a in checked.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]


def test_private_addresses_pass_only_when_the_operator_allows_them() -> None:
    s = settings(allowed_hosts=["127.0.0.1"], allow_private_addresses=True)
    assert str(check_callback_url("http://127.0.0.1:9/", s).addresses[0]) == "127.0.0.1"
    # the allow-list still applies
    with pytest.raises(URLRefused) as info:
        check_callback_url("http://10.0.0.1/", s)
    assert info.value.reason == "host_not_allowed"


def test_hosts_off_the_allow_list_are_refused() -> None:
    resolver = fixed_resolver({"evil.example": ["93.184.216.34"]})
    with pytest.raises(URLRefused) as info:
        check_callback_url("https://evil.example/", settings(allowed_hosts=["hooks.example.com"]), resolver=resolver)
    assert info.value.reason == "host_not_allowed"
    with pytest.raises(URLRefused) as info:
        check_callback_url("https://evil.example/", settings(), resolver=resolver)
    assert info.value.reason == "host_not_allowed"
    assert "SPOTLIGHT_ALLOWED_HOSTS" in str(info.value)


def test_wildcard_entries_match_subdomains_only() -> None:
    allowed = ["*.example.com"]
    assert host_allowed("a.example.com", allowed)
    assert host_allowed("a.b.example.com", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("evilexample.com", allowed)
    assert not host_allowed("example.com.evil.net", allowed)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://hooks.example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://hooks.example.com:6379/_SET", "scheme"),
        ("hooks.example.com/cb", "scheme"),
        ("http:///nohost", "malformed"),
        ("http://hooks.example.com\\@evil.example/", "malformed"),
        ("http://hooks.example.com /", "malformed"),
        ("http://hooks.example.com:99999/", "malformed"),
        ("", "malformed"),
    ],
)
def test_malformed_and_non_http_callbacks_are_refused(url: str, reason: str) -> None:
    resolver = fixed_resolver({"hooks.example.com": ["93.184.216.34"], "evil.example": ["10.0.0.1"]})
    with pytest.raises(URLRefused) as info:
        check_callback_url(url, settings(allowed_hosts=["hooks.example.com"]), resolver=resolver)
    assert info.value.reason == reason


def test_userinfo_does_not_smuggle_another_host() -> None:
    resolver = fixed_resolver({"hooks.example.com": ["93.184.216.34"], "evil.example": ["93.184.216.35"]})
    with pytest.raises(URLRefused) as info:
        check_callback_url(
            "http://hooks.example.com@evil.example/", settings(allowed_hosts=["hooks.example.com"]), resolver=resolver
        )
    assert info.value.reason == "host_not_allowed"
    assert "hooks.example.com@" not in str(info.value.details())


def test_unresolvable_hosts_are_refused() -> None:
    with pytest.raises(URLRefused) as info:
        check_callback_url(
            "http://nowhere.example/", settings(allowed_hosts=["nowhere.example"]), resolver=fixed_resolver({})
        )
    assert info.value.reason == "unresolvable"


def test_guarded_request_connects_to_the_checked_address_and_sends_the_real_host(http_server) -> None:
    http_server.files["/hello"] = b"hi"
    s = settings(allowed_hosts=["files.test"], allow_private_addresses=True)
    # A second lookup would say 10.9.9.9 (rebinding); the request must use the first answer.
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])
    with guarded_request(
        "GET", http_server.url("/hello", "files.test"), s, "reference", resolver=lambda h, p: next(answers)
    ) as response:
        assert response.status_code == 200
        assert response.read() == b"hi"
    assert http_server.seen_hosts == [f"files.test:{http_server.port}"]


def test_guarded_request_refuses_loopback_by_default(http_server) -> None:
    http_server.files["/hello"] = b"hi"
    with pytest.raises(URLRefused):
        with guarded_request(
            "GET",
            http_server.url("/hello", "files.test"),
            settings(allowed_hosts=["files.test"]),
            "reference",
            resolver=fixed_resolver({"files.test": ["127.0.0.1"]}),
        ):
            pass
    assert http_server.seen_hosts == []


def test_redirects_to_private_addresses_are_refused() -> None:
    """A public, allow-listed host answering 302 to an internal one must not be followed there."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://internal.example.com/admin"})

    resolver = fixed_resolver({"public.example.com": ["93.184.216.34"], "internal.example.com": ["10.0.0.5"]})
    s = settings(allowed_hosts=["*.example.com"])
    with pytest.raises(URLRefused) as info:
        with guarded_request(
            "GET",
            "http://public.example.com/data.npz",
            s,
            "reference",
            resolver=resolver,
            transport=httpx.MockTransport(handler),
        ):
            pass
    assert info.value.reason == "private_address"
    assert calls == ["http://93.184.216.34/data.npz"]


def test_redirect_loops_stop() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    resolver = fixed_resolver({"public.example.com": ["93.184.216.34"]})
    with pytest.raises(URLRefused) as info:
        with guarded_request(
            "GET",
            "http://public.example.com/",
            settings(allowed_hosts=["public.example.com"]),
            "reference",
            resolver=resolver,
            transport=httpx.MockTransport(handler),
        ):
            pass
    assert info.value.reason == "redirects"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1: a DNS64 resolver hands these out for any name
        "64:ff9b::a00:7",  # NAT64 of 10.0.0.7
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata address
    ],
)
def test_nat64_addresses_of_private_ipv4_are_refused(address: str) -> None:
    import ipaddress

    from spotlight.server.netguard import is_forbidden_address

    assert is_forbidden_address(ipaddress.ip_address(address))
    resolver = fixed_resolver({"hooks.example.com": [address]})
    with pytest.raises(URLRefused) as info:
        check_callback_url(
            "https://hooks.example.com/cb", settings(allowed_hosts=["hooks.example.com"]), resolver=resolver
        )
    assert info.value.reason == "private_address"
