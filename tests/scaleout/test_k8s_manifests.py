"""deploy/k8s agrees with the Kubernetes schemas and with the code.

No cluster runs here, so the manifests are checked the way tests/test_packaging.py checks the
Dockerfile and compose: every object validates (strict) against the Kubernetes JSON schemas that
the `kubernetes-validate` package ships (offline), KEDA's ScaledObject against a schema written
from KEDA's documentation (keda_scaledobject.schema.json), and names, ports, commands, env
variables, probe paths and the scaled queue's Redis key are compared with the code.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml
from rq import Queue

from spotlight.client.cli import parse_args
from spotlight.server.jobqueue import report_queue
from spotlight.server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest version the manifests promise to work on
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: str) -> dict[str, Any]:
    containers = one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: str) -> dict[str, str]:
    """The environment the container starts with: its ConfigMaps and Secrets, then its own env."""
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(one("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def settings_env_names() -> set[str]:
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names.update(choices or [f"{prefix}{name.upper()}"])
    return names


def quantity_bytes(q: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    for unit, factor in units.items():
        if q.endswith(unit):
            return int(q[: -len(unit)]) * factor
    return int(q)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_object_validates_against_its_schema(path: Path) -> None:
    keda_schema = json.loads((Path(__file__).with_name("keda_scaledobject.schema.json")).read_text())
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, keda_schema)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_keda_schema_rejects_what_keda_would_reject() -> None:
    """The hand-written schema is not a rubber stamp: a Redis trigger without listName, or a typo, fails."""
    schema = json.loads((Path(__file__).with_name("keda_scaledobject.schema.json")).read_text())
    good = one("ScaledObject", "spotlight-worker")
    jsonschema.validate(good, schema)
    no_list = json.loads(json.dumps(good))
    del no_list["spec"]["triggers"][0]["metadata"]["listName"]
    typo = json.loads(json.dumps(good))
    typo["spec"]["minReplicas"] = 0
    number = json.loads(json.dumps(good))
    number["spec"]["triggers"][0]["metadata"]["listLength"] = 1
    for bad in (no_list, typo, number):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())


def test_selectors_match_their_pods() -> None:
    workloads = [o for o in objects() if o["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for svc in (o for o in objects() if o["kind"] == "Service"):
        targets = [
            w
            for w in workloads
            if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, svc["metadata"]["name"]
        ports = {
            p["name"]: p["containerPort"]
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: no container port {port['targetPort']}"


def test_the_api_command_port_and_probes_agree_with_the_cli_and_the_app() -> None:
    api = container("spotlight-api")
    args = parse_args(api["command"][1:])
    assert api["command"][0] == "spotlight" and args.command == "api"
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports["http"] == args.port
    paths = set(json.loads((ROOT / "openapi" / "openapi.json").read_text())["paths"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths
    assert {api["readinessProbe"]["httpGet"]["port"], api["livenessProbe"]["httpGet"]["port"]} <= {"http", args.port}
    # It binds 0.0.0.0, which the CLI allows only with API keys.
    assert args.host == "0.0.0.0" and not args.allow_open_bind
    assert env_of("spotlight-api").get("SPOTLIGHT_API_KEYS")


def test_gpu_workers_run_searches_only_and_cpu_workers_render_reports_and_deliver_webhooks() -> None:
    from worker.cli import served

    gpu, reports, callbacks = (container(f"spotlight-{n}") for n in ("worker", "reports", "callbacks"))
    args = {n: parse_args(c["command"][1:]) for n, c in (("gpu", gpu), ("reports", reports), ("cb", callbacks))}
    assert {a.command for a in args.values()} == {"worker"}
    # what each one serves, read from its flags by the code that starts it (worker/cli.py)
    assert served(args["gpu"]) == {"searches": True, "reports": False, "callbacks": False}
    assert served(args["reports"]) == {"searches": False, "reports": True, "callbacks": False}
    assert served(args["cb"]) == {"searches": False, "reports": False, "callbacks": True}
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    for cpu_only in (reports, callbacks):
        assert "nvidia.com/gpu" not in cpu_only["resources"].get("limits", {})
        assert "nvidia.com/gpu" not in cpu_only["resources"].get("requests", {})
    assert "tolerations" not in one("Deployment", "spotlight-reports")["spec"]["template"]["spec"]  # no GPU node
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert gpu["image"] == f"spotlight-worker:{version}"  # the Dockerfile's worker target (torch, CUDA)
    assert reports["image"] == gpu["image"]  # the report draws with matplotlib, a worker extra
    assert callbacks["image"] == container("spotlight-api")["image"] == f"spotlight-api:{version}"  # no torch
    # the store the report reads the job's results and dataset from: a writable /data like the worker's
    mounts = {m["mountPath"] for m in reports["volumeMounts"]}
    assert "/data" in mounts and env_of("spotlight-reports")["SPOTLIGHT_DATA_DIR"] == "/data"


def test_every_container_requests_resources() -> None:
    for w in (o for o in objects() if o["kind"] in ("Deployment", "StatefulSet")):
        for c in w["spec"]["template"]["spec"]["containers"]:
            requests = c["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), f"{w['metadata']['name']}/{c['name']}"


def test_env_names_are_settings_or_s3_credentials() -> None:
    known = settings_env_names() | AWS_ENV
    for name in ("spotlight-api", "spotlight-worker", "spotlight-reports", "spotlight-callbacks"):
        env = env_of(name)
        assert set(env) <= known, f"{name}: unknown variables {sorted(set(env) - known)}"
    # Every process agrees on where Redis, the store and the queue are.
    envs = {n: env_of(n) for n in ("spotlight-api", "spotlight-worker", "spotlight-reports", "spotlight-callbacks")}
    for key in ("REDIS_URL", "SPOTLIGHT_STORE_URL", "SPOTLIGHT_QUEUE_NAME", "SPOTLIGHT_NAMESPACE"):
        assert len({e.get(key) for e in envs.values()}) == 1, key
    assert envs["spotlight-api"]["SPOTLIGHT_STORE_URL"].startswith("s3://")
    for name in ("spotlight-api", "spotlight-worker", "spotlight-reports"):  # those that read and write the store
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(envs[name]), name


def test_the_kubernetes_schemas_catch_a_typo() -> None:
    """Strict validation is not a rubber stamp: a misspelt field fails."""
    broken = json.loads(json.dumps(one("Deployment", "spotlight-api")))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def settings_of(deployment: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the container's process would read from its environment."""
    for key, value in env_of(deployment).items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_keda_scales_workers_on_the_queue_list_the_api_pushes_to(monkeypatch: pytest.MonkeyPatch) -> None:
    scaled = one("ScaledObject", "spotlight-worker")
    settings = settings_of("spotlight-worker", monkeypatch)
    triggers = scaled["spec"]["triggers"]
    queue = Queue(settings.rq_queue_name(), connection=redis.Redis())  # no connection is opened
    # the search queue only: reports are rendered by the CPU report worker, which no GPU worker waits for
    assert [t["metadata"]["listName"] for t in triggers] == [queue.key]
    assert report_queue(redis.Redis(), settings).key not in {t["metadata"]["listName"] for t in triggers}
    redis_url = urlsplit(settings.redis_url or "")
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == f"{redis_url.hostname}:{redis_url.port}"
        assert trigger["metadata"]["enableTLS"] == ("true" if redis_url.scheme == "rediss" else "false")
        assert trigger["metadata"]["databaseIndex"] == (redis_url.path.strip("/") or "0")
    svc = one("Service", redis_url.hostname or "")
    assert redis_url.port in [p["port"] for p in svc["spec"]["ports"]]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "spotlight-worker"
    assert scaled["spec"]["minReplicaCount"] == 0  # scale to zero when idle


def test_a_scaled_down_worker_may_finish_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of("spotlight-worker", monkeypatch)
    grace = one("Deployment", "spotlight-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= settings.job_timeout_s


@pytest.mark.parametrize("deployment", ["spotlight-api", "spotlight-worker"])
def test_the_local_cache_fits_its_volume(deployment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(deployment, monkeypatch)
    pod = one("Deployment", deployment)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(settings.data_dir)])
    assert settings.resolved_cache_dir().is_relative_to(settings.data_dir)
    assert settings.cache_max_bytes < quantity_bytes(volume["emptyDir"]["sizeLimit"])


def test_both_images_can_reach_an_s3_store() -> None:
    """The store is s3:// here, so the image of every process that touches it carries s3fs."""
    from tests.test_packaging import _stages

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("s3fs") for dep in extras["s3"])
    for deployment, stage in (("spotlight-api", "api"), ("spotlight-worker", "worker")):
        assert container(deployment)["image"].split(":")[0] == f"spotlight-{stage}"
        install = " ".join(r for w, r in _stages()[stage] if w == "RUN")
        extras_installed = install.split("/app[", 1)[1].split("]", 1)[0].split(",") if "/app[" in install else []
        assert "s3" in extras_installed, stage
