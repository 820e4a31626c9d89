"""Where the commands that start something live: the `spotlight.commands` entry points.

pyproject.toml registers each (`api = "service.cli:main"`, `up = "spotlight.ops.up:main"`, ...), so
the client's `spotlight` command (spotlight/client/cli.py) names only the command and never a module
of the server's: the layer test can then hold the client to importing the contract alone.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

COMMAND_GROUP = "spotlight.commands"


def command_owners() -> dict[str, str]:
    """{command: "module:function"}: the installed package's `spotlight.commands` entry points.

    An editable install made before the group existed has none in its metadata; a checkout's
    pyproject.toml then says the same (until `pip install -e .` writes them)."""
    owners = {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP)}
    return owners or owners_in_checkout()


def owners_in_checkout() -> dict[str, str]:
    """The group as the checkout this package runs from declares it ({} in an installed wheel)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return {}
    if project.get("name") != "spotlight-service":
        return {}
    return dict(project.get("entry-points", {}).get(COMMAND_GROUP, {}))


def owner(command: str) -> tuple[str, str]:
    """(module, function) that runs `command`."""
    found = command_owners().get(command)
    if found is None:
        raise SystemExit(
            f"spotlight {command}: this install registers no {COMMAND_GROUP!r} entry point for it; "
            "reinstall the package (`pip install -e .` in a checkout)"
        )
    module, _, function = found.partition(":")
    return module.strip(), (function or "main").strip()
