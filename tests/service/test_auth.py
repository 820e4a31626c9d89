"""API keys: 401 without a valid key; a tenant sees only its own datasets, jobs and results (404)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.auth import KeyConfigError, KeyRing
from spotlight.server.settings import Settings
from tests.service.conftest import npz_bytes, toy


def test_keys_are_required_when_configured(make_api) -> None:
    api = make_api(api_keys="alice:a-secret")
    with api.client() as anon, api.client("wrong") as wrong, api.client("a-secret") as alice:
        for c in (anon, wrong):
            r = c.get("/v1/datasets")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert anon.post("/v1/jobs", json={"dataset": "ds_x"}).status_code == 401
        assert anon.get("/healthz").status_code == 200
        assert alice.get("/v1/datasets").status_code == 200
        r = anon.get("/v1/datasets", headers={"Authorization": "Basic YTpi"})
        assert r.status_code == 401


def test_tenants_see_only_their_own(make_api) -> None:
    api = make_api(api_keys="alice:ka, bob:kb")
    data = toy()
    with api.client("ka") as alice, api.client("kb") as bob:
        ds = alice.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
        ).json()
        job = alice.post("/v1/jobs", json={"dataset": ds["id"]}).json()
        for path in (
            f"/v1/datasets/{ds['id']}",
            f"/v1/jobs/{job['id']}",
            f"/v1/jobs/{job['id']}/regions",
            f"/v1/jobs/{job['id']}/regions/0/members",
            f"/v1/jobs/{job['id']}/weights",
            f"/v1/jobs/{job['id']}/report",
        ):
            r = bob.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] in ("dataset_not_found", "job_not_found")
        assert bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert bob.delete(f"/v1/datasets/{ds['id']}").status_code == 404
        assert bob.post("/v1/jobs", json={"dataset": ds["id"]}).status_code == 404
        assert bob.get("/v1/datasets").json() == {"datasets": [], "total": 0}
        assert bob.get("/v1/jobs").json() == {"jobs": [], "total": 0}
        # same bytes uploaded by bob: his own record, the shared blob
        mine = bob.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
        ).json()
        assert mine["id"] != ds["id"] and mine["sha256"] == ds["sha256"]
        assert alice.get(f"/v1/datasets/{ds['id']}").status_code == 200
        assert alice.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_keys_file_with_hashed_keys(tmp_path: Path, make_api) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# operators' keys\ncarol:sha256:{hashlib.sha256(b'carol-key').hexdigest()}\ndave:dave-key\n")
    api = make_api(api_keys_file=keys)
    with (
        api.client("carol-key") as carol,
        api.client("dave-key") as dave,
        api.client(hashlib.sha256(b"carol-key").hexdigest()) as hash_as_key,
    ):
        assert carol.get("/v1/jobs").status_code == 200
        assert dave.get("/v1/jobs").status_code == 200
        assert hash_as_key.get("/v1/jobs").status_code == 401


def test_keyring_stores_only_hashes_and_rejects_bad_config(tmp_path: Path) -> None:
    ring = KeyRing.from_settings(Settings(api_keys="t1:plain-key", api_keys_file=None))
    assert "plain-key" not in repr(ring)
    assert ring.tenant_for("plain-key") == "t1" and ring.tenant_for("plain-kez") is None
    assert KeyRing.from_settings(Settings(api_keys=None, api_keys_file=None)).open
    with pytest.raises(KeyConfigError):
        KeyRing.from_settings(Settings(api_keys="no-colon", api_keys_file=None))
    with pytest.raises(KeyConfigError):
        KeyRing.from_settings(Settings(api_keys="t:sha256:abc", api_keys_file=None))


def test_only_a_bearer_scheme_with_a_token_is_read() -> None:
    """A valid key under another scheme, or a scheme with no token, is not a credential."""
    from service.auth import bearer_token

    assert bearer_token("Bearer key-1") == "key-1" and bearer_token("bearer  key-1 ") == "key-1"
    for header in ("Basic key-1", "Token key-1", "key-1", "Bearer", "Bearer   ", "", None):
        assert bearer_token(header) is None, header


def test_a_valid_key_under_another_scheme_is_401(make_api) -> None:
    api = make_api(api_keys="alice:a-secret")
    with api.client() as c:
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer a-secret"}).status_code == 200
        assert c.get("/v1/jobs", headers={"Authorization": "Basic a-secret"}).status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer"}).status_code == 401


@pytest.mark.parametrize(
    "entry",
    [
        "a b:key",  # tenant names become parts of Redis keys and log fields: letters, digits, '_.-' only
        "a/b:key",
        "tenant*:key",
        "é:key",
        ":key",
        "x" * 65 + ":key",
        "t:",  # no key at all
        "t:sha256:" + "g" * 64,  # not hex
    ],
)
def test_malformed_key_entries_stop_the_server_at_startup(entry: str) -> None:
    with pytest.raises(KeyConfigError):
        KeyRing.from_settings(Settings(api_keys=entry, api_keys_file=None))


def test_hashed_keys_match_whatever_the_case_of_their_hex() -> None:
    digest = hashlib.sha256(b"erin-key").hexdigest()
    for written in (digest, digest.upper()):
        ring = KeyRing.from_settings(Settings(api_keys=f"erin:sha256:{written}", api_keys_file=None))
        assert ring.tenant_for("erin-key") == "erin"
    assert KeyRing.from_settings(Settings(api_keys=f"t:{'x' * 64}", api_keys_file=None)).tenant_for("x" * 64) == "t"
