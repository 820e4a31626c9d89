"""API keys: who is calling, as a tenant name.

Keys come from `SPOTLIGHT_API_KEYS` ("tenant:key,tenant:key") and/or `SPOTLIGHT_API_KEYS_FILE`
(one `tenant:key` or `tenant:sha256:<hex>` per line, `#` comments). Only their SHA-256 is kept in
memory, and a presented key's hash is compared with every stored hash by `hmac.compare_digest`,
so neither the keys nor the timing of a comparison reveal anything. With no keys configured the
server is open and everyone is tenant "default" (`spotlight up` then binds to loopback only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from spotlight.server.settings import Settings

OPEN_TENANT = "default"
_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class KeyConfigError(ValueError):
    """The operator's key configuration is malformed (raised at startup, not per request)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRing:
    """(sha256 hex of key, tenant) pairs. Empty: the server runs open."""

    entries: tuple[tuple[str, str], ...]

    @property
    def open(self) -> bool:
        return not self.entries

    def tenant_for(self, presented: str) -> str | None:
        digest = hash_key(presented).encode()
        found: str | None = None
        for stored, tenant in self.entries:  # no early exit: the time is the same for every key
            if hmac.compare_digest(digest, stored.encode()):
                found = tenant
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries: list[tuple[str, str]] = []
        if settings.api_keys:
            for item in settings.api_keys.split(","):
                if item.strip():
                    entries.append(_parse_entry(item.strip(), "SPOTLIGHT_API_KEYS"))
        if settings.api_keys_file:
            text = settings.api_keys_file.read_text()
            for lineno, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    entries.append(_parse_entry(line, f"{settings.api_keys_file}:{lineno}"))
        return cls(tuple(entries))


def _parse_entry(item: str, where: str) -> tuple[str, str]:
    tenant, sep, rest = item.partition(":")
    if not sep or not rest or not _TENANT.fullmatch(tenant):
        raise KeyConfigError(f"{where}: expected 'tenant:key' with a tenant of letters, digits, '_.-'")
    if rest.startswith("sha256:"):
        digest = rest[len("sha256:") :]
        if not _HEX64.fullmatch(digest):
            raise KeyConfigError(f"{where}: 'tenant:sha256:<hex>' needs 64 hex digits")
        return digest.lower(), tenant
    return hash_key(rest), tenant


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
