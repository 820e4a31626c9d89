"""Print the README's configuration table from the Settings class, so the two never drift.

`python -m spotlight.server.settings_doc` prints it; a test fails when the README's copy differs.
"""

from __future__ import annotations

import json

from pydantic.fields import FieldInfo

from spotlight.server.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _env_names(name: str, field: FieldInfo) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return " / ".join(f"`{c}`" for c in choices)
    return f"`{prefix}{name.upper()}`"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, (list, dict, bool)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def settings_table() -> str:
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| {_env_names(name, field)} | {_default(field)} | {desc} |")
    return "\n".join(rows)


def main() -> None:
    print(BEGIN)
    print(settings_table())
    print(END)


if __name__ == "__main__":
    main()
