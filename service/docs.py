"""/docs (Swagger UI) and /redoc (ReDoc) served with the app's own copies of their assets.

FastAPI's default pages pull their JavaScript from a CDN: blank on an offline box, and a third
party's script running next to an API key. The assets come instead from the `fastapi-offline`
package (MIT; Swagger UI is Apache-2.0, ReDoc MIT), which the `server` extra installs; the pages
have no inline script, so their Content-Security-Policy (service/security_headers.py) can allow
scripts from this origin only.
"""

from __future__ import annotations

import importlib.util
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from service.security_headers import DOCS_CSP
from spotlight.contract.errors import NotFound
from spotlight.contract.protocol import ErrorCode

router = APIRouter(include_in_schema=False)

_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
SWAGGER_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.spec,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
  });
});
"""


def assets_dir() -> Path | None:
    """The folder holding the installed copies of Swagger UI and ReDoc, or None when not installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def _page(title: str, head: str, body: str) -> HTMLResponse:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"{head}</head>{body}</html>\n"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP})


def _missing(title: str, base: str) -> HTMLResponse:
    return _page(
        title,
        "",
        f"<body><p>The API docs' assets are not installed on this server (install the "
        f'<code>server</code> extra). The spec is at <a href="{base}/openapi.json">'
        f"{base}/openapi.json</a>.</p></body>",
    )


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    base = escape(request.scope.get("root_path", "").rstrip("/"))
    title = f"{request.app.title} - Swagger UI"
    if assets_dir() is None:
        return _missing(title, base)
    head = (
        f'<link rel="stylesheet" href="{base}/docs/assets/swagger-ui.css">'
        f'<link rel="icon" type="image/png" href="{base}/docs/assets/favicon.png">'
    )
    body = (
        f'<body data-spec="{base}/openapi.json"><div id="swagger-ui"></div>'
        f'<script src="{base}/docs/assets/swagger-ui-bundle.js"></script>'
        f'<script src="{base}/docs/assets/swagger-init.js"></script></body>'
    )
    return _page(title, head, body)


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    base = escape(request.scope.get("root_path", "").rstrip("/"))
    title = f"{request.app.title} - ReDoc"
    if assets_dir() is None:
        return _missing(title, base)
    head = f'<link rel="icon" type="image/png" href="{base}/docs/assets/favicon.png">'
    body = (
        f'<body><redoc spec-url="{base}/openapi.json"></redoc>'
        f'<script src="{base}/docs/assets/redoc.standalone.js"></script></body>'
    )
    return _page(title, head, body)


@router.get("/docs/assets/{name}")
def asset(name: str) -> Response:
    if name == "swagger-init.js":
        return Response(SWAGGER_INIT, media_type=_MEDIA[".js"], headers={"Cache-Control": "public, max-age=86400"})
    folder = assets_dir()
    if folder is None or name not in ASSETS:
        raise NotFound(ErrorCode.NOT_FOUND, f"No docs asset {name[:100]!r}.", {"asset": name[:100]})
    path = folder / name
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "public, max-age=86400"})
