"""Which operator setting would allow what a reference or callback refusal refused.

The guards (spotlight/server/refs.py, spotlight/server/netguard.py) say *why* they refuse, as a machine-readable
``reason``; the API's edge turns that into the setting that governs it, so every refusal a caller
sees names the knob (an operator decision, never something the caller can flip).
"""

from __future__ import annotations

from typing import Any

SETTING_FOR_REASON: dict[str, str] = {
    "scheme": "SPOTLIGHT_ALLOWED_SCHEMES",
    "outside_roots": "SPOTLIGHT_ALLOWED_ROOTS",
    "host_not_allowed": "SPOTLIGHT_ALLOWED_HOSTS",
    "private_address": "SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES",
    "too_large": "SPOTLIGHT_MAX_UPLOAD_BYTES",
}


def hinted(message: str, details: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The message and details with the governing setting named (unless the message already names it)."""
    out = dict(details or {})
    setting = SETTING_FOR_REASON.get(str(out.get("reason", "")))
    if setting is None:
        return message, out
    out["setting"] = setting
    if setting not in message:
        message = f"{message.rstrip('.')} (the operator's {setting} governs this)"
    return message, out
