"""Image bytes in a dataset (a Hugging Face Image column, or a plain bytes column) -> small data: URIs.

The report shows `data:image/…` metadata values as thumbnails, so an image column becomes one of
those per row, bounded in size: with Pillow installed every image is shrunk to a THUMB_PX-pixel
thumbnail (a few kB); without it an image is kept as it is only when it already fits
MAX_URI_BYTES, else dropped (null). An image declaring more than MAX_PIXELS is never decoded. Bytes that are not a recognised image format are never stored
as text (they would be mojibake): the row keeps ``null``.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

THUMB_PX = 96
MAX_URI_BYTES = 24 * 1024
# Images are decoded in the API process (in the upload's thread, never the event loop), so their
# cost is bounded twice: past MAX_PIXELS one image is skipped (null) unread, so a small file that
# declares a huge canvas (a decompression bomb) costs nothing; and one upload decodes at most
# MAX_PIXELS_PER_UPLOAD pixels in all (later images are null), identical images once. A 9 KB
# Parquet of 300 identical 4096² PNGs cost 104 s of API CPU before; now one 2048²-bounded decode.
MAX_PIXELS = 2048 * 2048
MAX_PIXELS_PER_UPLOAD = 64 * 1024 * 1024

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


_REMEMBERED = 256  # thumbnails an upload remembers, to decode a repeated image once


class ImageBudget:
    """What one upload may still decode, and the thumbnails it already made (by the image's hash)."""

    def __init__(self, pixels: int = MAX_PIXELS_PER_UPLOAD) -> None:
        self.pixels_left = pixels
        self.made: dict[bytes, str | None] = {}

    def spend(self, pixels: int) -> bool:
        if pixels > self.pixels_left:
            return False
        self.pixels_left -= pixels
        return True


def _thumbnail(data: bytes, budget: ImageBudget) -> tuple[bytes, str] | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            if im.width * im.height > MAX_PIXELS or not budget.spend(im.width * im.height):
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


def to_data_uri(data: bytes | None, budget: ImageBudget | None = None) -> str | None:
    """A bounded `data:image/…;base64,…` for image bytes; None for non-images or what will not fit."""
    if not data:
        return None
    budget = budget or ImageBudget()
    key = hashlib.sha256(data).digest()
    if key not in budget.made:
        if len(budget.made) >= _REMEMBERED:
            del budget.made[next(iter(budget.made))]  # the oldest: memory stays a few MB
        budget.made[key] = _data_uri(data, budget)
    return budget.made[key]


def _data_uri(data: bytes, budget: ImageBudget) -> str | None:
    mime = sniff(data)
    if mime is None:
        return None
    small = _thumbnail(data, budget)
    if small is not None:
        data, mime = small
        if not data:  # too many pixels to decode here
            return None
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return uri if len(uri) <= MAX_URI_BYTES else None


def image_value(value: Any, budget: ImageBudget | None = None) -> str | None:
    """One cell of an image column: a HF Image struct ``{"bytes", "path"}`` or raw bytes."""
    if isinstance(value, dict):
        raw = value.get("bytes")
        return to_data_uri(bytes(raw), budget) if isinstance(raw, (bytes, bytearray)) else None
    if isinstance(value, (bytes, bytearray)):
        return to_data_uri(bytes(value), budget)
    return None
