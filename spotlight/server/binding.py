"""Whether the API may bind an address: with no API keys it is open to whoever can reach it.

Both `spotlight api` (service/cli.py) and `spotlight up` (spotlight/ops/up.py) apply it before binding,
so it lives below both, with the settings it reads.
"""

from __future__ import annotations

import ipaddress
import logging

from spotlight.server.settings import Settings

log = logging.getLogger("spotlight.server.binding")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def has_api_keys(settings: Settings) -> bool:
    return bool(settings.api_keys) or settings.api_keys_file is not None


def check_bind(settings: Settings, host: str, allow_open_bind: bool, *, warn: bool = True) -> None:
    """With no API keys the service is open to whoever can reach it: loopback only, unless told.

    `warn=False` refuses the same but says nothing otherwise: `spotlight up` checks before it starts
    anything, and the API it starts says it once, where it binds."""
    if has_api_keys(settings):
        return
    if is_loopback(host):
        if warn:
            log.warning("no API keys configured: the API runs open, so it binds to %s (loopback) only", host)
        return
    if not allow_open_bind:
        raise SystemExit(
            f"refusing to bind {host} without API keys: anyone who can reach it could read every dataset. "
            "Set SPOTLIGHT_API_KEYS (or SPOTLIGHT_API_KEYS_FILE), bind 127.0.0.1, or pass --allow-open-bind."
        )
    if warn:
        log.warning("no API keys configured and --allow-open-bind given: the API on %s is open to anyone", host)
