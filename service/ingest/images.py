"""Image bytes in a dataset (a Hugging Face Image column, or a plain bytes column) -> small data: URIs.

The report shows `data:image/…` metadata values as thumbnails, so an image column becomes one of
those per row, bounded in size: with Pillow installed every image is shrunk to a THUMB_PX-pixel
thumbnail (a few kB); without it an image is kept as it is only when it already fits
MAX_URI_BYTES, else dropped (null). An image declaring more than MAX_PIXELS is never decoded. Bytes that are not a recognised image format are never stored
as text (they would be mojibake): the row keeps ``null``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

THUMB_PX = 96
MAX_URI_BYTES = 24 * 1024
# Images are decoded in the API process: past this many pixels one is skipped (null) unread, so a
# small file that declares a huge canvas (a decompression bomb) costs nothing.
MAX_PIXELS = 4096 * 4096

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff(data: bytes) -> str | None:
    """The image MIME type of `data` by its magic bytes, or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _thumbnail(data: bytes) -> tuple[bytes, str] | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            if im.width * im.height > MAX_PIXELS:
                return b"", ""
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced scale
            im.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            if im.mode in ("RGBA", "LA", "P"):
                im.convert("RGBA").save(out, format="PNG", optimize=True)
                return out.getvalue(), "image/png"
            im.convert("RGB").save(out, format="JPEG", quality=80)
            return out.getvalue(), "image/jpeg"
    except Exception:  # noqa: BLE001 - Pillow raises many types on a broken image; the row keeps null
        return None


def to_data_uri(data: bytes | None) -> str | None:
    """A bounded `data:image/…;base64,…` for image bytes; None for non-images or what will not fit."""
    if not data:
        return None
    mime = sniff(data)
    if mime is None:
        return None
    small = _thumbnail(data)
    if small is not None:
        data, mime = small
        if not data:  # too many pixels to decode here
            return None
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return uri if len(uri) <= MAX_URI_BYTES else None


def image_value(value: Any) -> str | None:
    """One cell of an image column: a HF Image struct ``{"bytes", "path"}`` or raw bytes."""
    if isinstance(value, dict):
        raw = value.get("bytes")
        return to_data_uri(raw) if isinstance(raw, (bytes, bytearray)) else None
    if isinstance(value, (bytes, bytearray)):
        return to_data_uri(bytes(value))
    return None
