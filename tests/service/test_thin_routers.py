"""Routers parse, call one domain function and answer: the rules live in the domain modules.

A check of the routers' source: what a route may not do itself (talk to Redis or the store, loop over
records, catch errors to turn them into others) is where a rule hides when it lands in a router.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROUTERS = sorted(p for p in (ROOT / "service" / "routers").glob("*.py") if p.name != "__init__.py")
# The routers reach these through the domain modules (registries, job_results, scoring, comparing, ...).
NOT_IN_ROUTERS = (
    "redis",
    "rq",
    "fsspec",
    "spotlight.server.keys",
    "spotlight.server.jobqueue",
    "spotlight.server.store",
)
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _routes(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module's route functions: those decorated with `@router.<method>(...)`."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                func = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(func, ast.Attribute) and func.attr in HTTP_METHODS:
                    found.append(node)
    return found


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", ROUTERS, ids=lambda p: p.name)
def test_a_router_imports_no_storage(path: Path) -> None:
    imported = _imported(ast.parse(path.read_text()))
    bad = sorted(m for m in imported if any(m == b or m.startswith(b + ".") for b in NOT_IN_ROUTERS))
    assert not bad, f"{path.name} imports {bad}: reach them through a domain module"


@pytest.mark.parametrize("path", ROUTERS, ids=lambda p: p.name)
def test_a_route_body_holds_no_rule(path: Path) -> None:
    routes = _routes(ast.parse(path.read_text()))
    assert routes, f"{path.name} has no routes: the check would pass by reading nothing"
    for route in routes:
        where = f"{path.name}::{route.name}"
        for node in ast.walk(route):
            assert not isinstance(node, (ast.For, ast.AsyncFor, ast.While)), (
                f"{where}:{node.lineno} loops: a loop over records is domain work"
            )
            assert not isinstance(node, ast.Try), f"{where}:{node.lineno} catches errors: map them in service/errors.py"
            assert not (isinstance(node, ast.Attribute) and node.attr == "r"), (
                f"{where}:{node.lineno} reaches Redis through a registry"
            )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                assert not (isinstance(owner, ast.Name) and owner.id == "store"), (
                    f"{where}:{node.lineno} calls the store: a domain function reads and writes it"
                )
