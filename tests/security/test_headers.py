"""Every answer carries the security headers; the docs load nothing from elsewhere; the report is
served under a policy that allows inline styles and data: images only (so an image URL from
metadata cannot load, whatever the page holds)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from spotlight.server.settings import Settings


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=redis_url, data_dir=tmp_path, store_url=str(tmp_path / "store"), api_keys=None, api_keys_file=None
    )
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _policy(header: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = set(words[1:])
    return out


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/healthz", 200),
        ("GET", "/v1/jobs", 200),
        ("GET", "/v1/jobs/job_nope", 404),
        ("PUT", "/v1/jobs", 405),
        ("GET", "/nowhere", 404),
        ("GET", "/openapi.json", 200),
        ("POST", "/v1/datasets", 415),
        ("GET", "/boom", 500),
        ("GET", "/docs", 200),
        ("GET", "/redoc", 200),
        ("GET", "/docs/assets/swagger-ui-bundle.js", 200),
    ],
)
def test_every_answer_carries_the_security_headers(client: TestClient, method: str, path: str, status: int) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = _policy(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == {"'none'"} and csp["default-src"] == {"'none'"}
    assert csp["base-uri"] == {"'none'"}


def test_the_docs_load_only_this_origins_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        html = r.text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls, html
        assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert "<script>" not in html  # no inline script: the CSP allows 'self' scripts only
        for u in urls:
            if u.startswith("/docs/assets/"):
                asset = client.get(u)
                assert asset.status_code == 200 and len(asset.content) > 0, u
        csp = _policy(r.headers["content-security-policy"])
        assert csp["script-src"] == {"'self'"}
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404
    assert client.get("/docs/assets/nope.js").status_code == 404


def test_report_policy_allows_inline_styles_and_data_images_only() -> None:
    from service.security_headers import REPORT_CSP

    csp = _policy(REPORT_CSP)
    assert csp["default-src"] == {"'none'"}
    assert csp["img-src"] == {"data:"}
    assert csp["style-src"] == {"'unsafe-inline'"}
    assert "script-src" not in csp and "connect-src" not in csp
