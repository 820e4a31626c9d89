"""How a metadata value that names an image appears in the report: inline, as a link, or as text.

The report promises to load nothing from elsewhere: opening it must not tell an outside host who
read it, when, or from where. So only a ``data:image/…`` URI (bounded, base64 or percent-encoded,
of a raster type) is shown as an ``<img>``; an http(s) URL is shown as a link the reader may choose
to follow (``rel="noopener noreferrer"``), never fetched by the page; anything else is text.
SVG is not inlined: it is a document, not a picture. The API also serves the report with
``img-src data:`` (service/security_headers.py), so a remote image could not load there anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

MAX_DATA_URI = 256 * 1024
MAX_URL = 2048
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp|bmp|avif)(;[a-z0-9=.+-]+)*,[A-Za-z0-9+/=%._~-]*$")


@dataclass(frozen=True)
class Media:
    kind: Literal["inline", "link"]
    src: str  # the data: URI to put in <img src>, or the http(s) URL to put in <a href>


def media_for(value: Any) -> Media | None:
    """`Media` for a value that is an inline image or an http(s) URL; None for anything else."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v.startswith("data:"):
        return Media("inline", v) if len(v) <= MAX_DATA_URI and _DATA_IMAGE.match(v) else None
    if len(v) > MAX_URL or any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in v):
        return None
    try:
        parts = urlsplit(v)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return Media("link", v)
