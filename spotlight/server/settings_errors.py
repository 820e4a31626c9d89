"""Reading the settings for a person: one line per bad variable, a warning per unknown one.

pydantic-settings reports a bad environment variable as a multi-screen traceback that names the
field, not the variable, and never says which form it wanted (``SPOTLIGHT_ALLOWED_ROOTS=/tmp/x``
fails because a JSON list is expected). `load_settings` turns that into one line per variable —
``SPOTLIGHT_ALLOWED_ROOTS='/tmp/x': expected a JSON list of strings, e.g. ["/data/a", "/data/b"]`` —
and warns about ``SPOTLIGHT_*`` variables nothing reads (a typo silently falls back to a default).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

log = logging.getLogger("spotlight.server.settings")

S = TypeVar("S", bound=BaseSettings)

PREFIX = "SPOTLIGHT_"
# SPOTLIGHT_* variables read outside Settings (the client CLI, the embedded Redis).
OTHER_VARIABLES = {
    "SPOTLIGHT_SERVER": "the client CLI's default --server",
    "SPOTLIGHT_API_KEY": "the client CLI's default --api-key",
    "SPOTLIGHT_REDIS_SERVER": "the redis-server binary `spotlight up` runs",
}


class SettingsProblem(SystemExit):
    """Bad configuration: exits the process with one line per bad variable (str(exc) is the text)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("bad configuration:\n  " + "\n  ".join(lines))


def variable(field: str) -> str:
    return "SPOTLIGHT_REDIS_URL (or REDIS_URL)" if field == "redis_url" else PREFIX + field.upper()


def expected_form(cls: type[BaseSettings], field: str) -> str:
    """What a variable's value must look like, from the field's type."""
    info = cls.model_fields.get(field)
    annotation: Any = info.annotation if info else str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return (
            'a JSON list of strings, e.g. ["/data/a", "/data/b"]'
            if field == "allowed_roots"
            else 'a JSON list of strings, e.g. ["a", "b"]'
        )
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is Path:
        return "a path"
    return "text"


def _shown(value: Any, field: str = "") -> str:
    if any(word in field for word in ("key", "secret", "password")):
        return "<hidden>"
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= 80 else text[:77] + "...'"


def problems(cls: type[BaseSettings], exc: Exception, environ: Mapping[str, str]) -> list[str]:
    """One line per bad variable, from pydantic's or pydantic-settings' error."""
    lines: list[str] = []
    if isinstance(exc, ValidationError):
        for err in exc.errors():
            field = str(err["loc"][0]) if err.get("loc") else "?"
            value = environ.get(PREFIX + field.upper(), err.get("input"))
            lines.append(
                f"{variable(field)}={_shown(value, field)}: expected {expected_form(cls, field)} ({err['msg']})"
            )
        return lines
    m = re.search(r'field "([^"]+)"', str(exc))
    if m:
        field = m.group(1)
        value = environ.get(PREFIX + field.upper(), "")
        return [f"{variable(field)}={_shown(value, field)}: expected {expected_form(cls, field)}"]
    return [str(exc)]


def unknown_variables(cls: type[BaseSettings], environ: Mapping[str, str]) -> list[str]:
    """Warnings for SPOTLIGHT_* variables that nothing reads, with the closest known name."""
    known = {PREFIX + f.upper() for f in cls.model_fields} | set(OTHER_VARIABLES)
    out = []
    for name in sorted(k for k in environ if k.startswith(PREFIX) and k not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        out.append(f"{name} is not a setting this service reads{hint}")
    return out


def _init_values_only(cls: Any, settings_cls: Any, init_settings: Any, *rest: Any, **kw: Any) -> tuple[Any, ...]:
    return (init_settings,)


def _from_values(cls: type[S]) -> type[S]:
    """`cls` validated from given values only (no environment): to collect every error at once."""
    return type(f"{cls.__name__}FromValues", (cls,), {"settings_customise_sources": classmethod(_init_values_only)})


def _is_json_field(cls: type[BaseSettings], field: str) -> bool:
    return expected_form(cls, field).startswith("a JSON list")


def all_problems(cls: type[BaseSettings], env: Mapping[str, str]) -> list[str]:
    """Every bad variable at once (pydantic-settings stops at the first JSON one it cannot parse)."""
    lines: list[str] = []
    values: dict[str, Any] = {}
    for field in cls.model_fields:
        name = PREFIX + field.upper()
        if name not in env or field == "redis_url":
            continue
        if _is_json_field(cls, field):
            try:
                parsed = json.loads(env[name])
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                lines.append(f"{name}={_shown(env[name], field)}: expected {expected_form(cls, field)}")
                continue
            values[field] = parsed
        else:
            values[field] = env[name]
    try:
        _from_values(cls)(**values)
    except ValidationError as exc:
        lines += problems(cls, exc, env)
    return lines


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """`cls` (spotlight/server/settings.py's Settings) from the environment, or SettingsProblem (a SystemExit)
    saying what to fix. The class is passed in, so this module never imports settings.py."""
    env = os.environ if environ is None else environ
    for warning in unknown_variables(cls, env):
        log.warning(warning)
    try:
        return cls()
    except (ValidationError, SettingsError) as exc:
        raise SettingsProblem(all_problems(cls, env) or problems(cls, exc, env)) from None
