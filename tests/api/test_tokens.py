"""Tokens: listed without their secrets, revoked (with their sessions, in every API
process at once), expiring, rotated when the configured secret changes; and the agent
token cache, which forgets what expired."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from bpfleet_api import security
from bpfleet_api.settings import ApiSettings
from pydantic import ValidationError

from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog
from tests.polling import wait_for

pytestmark = pytest.mark.services


def _mint(api: services.Api, token: str | None = None, **body: object) -> httpx.Response:
    with api.client(token) as client:
        return client.post("/v1/tokens", json={"name": f"t-{uuid.uuid4().hex[:6]}", **body})


def _status(api: services.Api, token: str, path: str = "/v1/nodes") -> int:
    with api.client(token) as client:
        return client.get(path).status_code


def test_tokens_are_listed_without_secrets_and_revoked_with_their_sessions(
    api: services.Api,
) -> None:
    minted = _mint(api, role="viewer")
    assert minted.status_code == 201, minted.text
    token, token_id = minted.json()["token"], minted.json()["id"]
    with httpx.Client(base_url=api.url) as browser:
        assert browser.post("/v1/session", json={"token": token}).status_code == 200
        assert browser.get("/v1/nodes").status_code == 200

        with api.client() as admin:
            listed = admin.get("/v1/tokens")
            assert listed.status_code == 200
            rows = {row["id"]: row for row in listed.json()}
            assert rows[token_id]["role"] == "viewer"
            assert rows[token_id]["revokedAt"] is None
            assert set(rows[token_id]) == {
                "id",
                "name",
                "role",
                "node",
                "sessionOf",
                "createdAt",
                "expiresAt",
                "revokedAt",
            }
            assert [row for row in rows.values() if row["sessionOf"] == token_id]
            assert token not in listed.text
            assert security.digest(token) not in listed.text
            assert api.admin_token not in listed.text
            admins = admin.get("/v1/tokens", params={"role": "admin"}).json()
            assert {row["role"] for row in admins} == {"admin"}

            assert admin.delete(f"/v1/tokens/{token_id}").status_code == 204
            assert admin.delete(f"/v1/tokens/{token_id}").status_code == 204  # no change
            assert admin.delete("/v1/tokens/999999").status_code == 404
            assert token_id not in {row["id"] for row in admin.get("/v1/tokens").json()}
            every = admin.get("/v1/tokens", params={"includeRevoked": True}).json()
            revoked = {row["id"]: row for row in every}
            assert revoked[token_id]["revokedAt"] is not None
            sessions = [row for row in every if row["sessionOf"] == token_id]
            assert sessions
            assert all(row["revokedAt"] is not None for row in sessions)
        assert _status(api, token) == 401
        assert browser.get("/v1/nodes").status_code == 401  # the session died with it


def test_tokens_may_expire(api: services.Api) -> None:
    later = datetime.now(UTC) + timedelta(days=30)
    dated = _mint(api, role="ci", expiresAt=later.isoformat())
    assert dated.status_code == 201, dated.text
    assert datetime.fromisoformat(dated.json()["expiresAt"]) == later
    assert _status(api, dated.json()["token"]) == 200

    for body, complaint in (
        ({"expiresAt": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, "in the past"),
        ({"expiresAt": later.isoformat(), "expiresInSeconds": 60}, "not both"),
        ({"expiresInSeconds": 0}, "expiresInSeconds"),
        ({"expiresAt": "2030-01-01T00:00:00"}, "timezone"),
    ):
        refused = _mint(api, role="ci", **body)
        assert refused.status_code == 422, body
        assert complaint in refused.text, refused.text

    brief = _mint(api, role="viewer", expiresInSeconds=1)
    assert brief.status_code == 201, brief.text
    assert brief.json()["expiresAt"] is not None
    wait_for(lambda: _status(api, brief.json()["token"]) == 401, what="the token to expire")


@contextlib.contextmanager
def _fresh_database(database_url: str, request: pytest.FixtureRequest, tmp: Path) -> Iterator[str]:
    """A database of its own (the module's ``api`` holds the shared one)."""
    if database_url.startswith("postgresql"):
        server: services.Postgres = request.getfixturevalue("postgres")
        yield server.create_database()
    else:
        yield f"sqlite:///{tmp}/fresh.db"


def test_a_changed_configured_token_revokes_the_old_one_at_start(
    database_url: str,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    old, new = (f"bpf_{name}-{uuid.uuid4().hex}" for name in ("old", "new"))
    boot_old, boot_new = (f"bpf_boot-{name}-{uuid.uuid4().hex}" for name in ("old", "new"))
    with _fresh_database(database_url, request, tmp_path) as database:
        with services.api_server(
            database,
            redis.url,
            signed_catalog.trust,
            tmp_path,
            admin_token=old,
            bootstrap_token=boot_old,
        ) as first:
            assert _status(first, old) == 200
            viewer = _mint(first, old, role="viewer").json()["token"]  # minted: never rotated
        with services.api_server(
            database,
            redis.url,
            signed_catalog.trust,
            tmp_path,
            admin_token=new,
            bootstrap_token=boot_new,
        ) as second:
            assert _status(second, old) == 401
            assert _status(second, new) == 200
            assert _status(second, viewer) == 200
            with second.client(new) as admin:
                every = admin.get("/v1/tokens", params={"includeRevoked": True}).json()
            configured = {
                (row["name"], row["revokedAt"] is None) for row in every if row["node"] is None
            }
            assert {("admin", True), ("admin", False)} <= configured
            assert {("bootstrap", True), ("bootstrap", False)} <= configured
            with second.client(boot_old) as client:
                assert client.post("/v1/agent/register", json={}).status_code == 401


def test_a_revoked_agent_token_stops_working_in_every_api_process(
    database_url: str,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    # Caches that would trust a token for an hour: only the revocation published on
    # Redis can make the second process refuse it within the test.
    hour = {"agent_token_cache_seconds": "3600"}
    admin, bootstrap = f"bpf_admin-{uuid.uuid4().hex}", f"bpf_boot-{uuid.uuid4().hex}"
    shared = {"admin_token": admin, "bootstrap_token": bootstrap, **hour}
    with (
        _fresh_database(database_url, request, tmp_path) as database,
        services.api_server(database, redis.url, signed_catalog.trust, tmp_path, **shared) as one,
        services.api_server(database, redis.url, signed_catalog.trust, tmp_path, **shared) as two,
    ):
        tokens = {}
        for name in ("deleted", "revoked"):
            node = f"{name}-{uuid.uuid4().hex[:6]}"
            with one.client(bootstrap) as client:
                registered = client.post(
                    "/v1/agent/register",
                    json={
                        "node": node,
                        "features": recorded_features.model_copy(update={"node": node}).model_dump(
                            mode="json"
                        ),
                    },
                )
            assert registered.status_code == 200, registered.text
            tokens[name] = (node, registered.json()["token"])

        def beat(server: services.Api, token: str) -> int:
            with server.client(token) as client:
                return client.post("/v1/agent/heartbeat", json={"revision": 0}).status_code

        for _, token in tokens.values():
            assert beat(two, token) == 204  # now in the second process's cache
        with one.client(admin) as client:
            assert client.delete(f"/v1/nodes/{tokens['deleted'][0]}").status_code == 204
            node = tokens["revoked"][0]
            (row,) = [
                row
                for row in client.get("/v1/tokens", params={"role": "agent"}).json()
                if row["node"] == node
            ]
            assert client.delete(f"/v1/tokens/{row['id']}").status_code == 204
        for name, (_, token) in tokens.items():
            assert beat(one, token) == 401, name
            wait_for(lambda token=token: beat(two, token) == 401, what=f"{name}: refused in two")


def test_production_refuses_short_configured_tokens() -> None:
    production = {
        "environment": "production",
        "database_url": "postgresql+psycopg://db/bpfleet",
        "trust": [Path("/etc/bpfleet/trust")],
    }
    ApiSettings(**production, admin_token="a" * 32, bootstrap_token="b" * 32)
    with pytest.raises(ValidationError, match="BPFLEET_API_ADMIN_TOKEN of at least 32"):
        ApiSettings(**production, admin_token="short")
    with pytest.raises(ValidationError, match="BPFLEET_API_BOOTSTRAP_TOKEN of at least 32"):
        ApiSettings(**production, admin_token="a" * 32, bootstrap_token="b" * 31)
    ApiSettings(environment="dev", admin_token="short")  # development takes anything


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_agent_token_cache_forgets_expired_entries() -> None:
    clock = Clock()
    cache = security.TokenCache(ttl_seconds=60, clock=clock)
    for index in range(100):
        cache.put(f"secret-{index}", f"node-{index}")
    assert len(cache) == 100
    assert cache.get("secret-7") == "node-7"
    clock.now = 61
    assert cache.get("secret-7") is None  # expired: never trusted
    cache.put("fresh", "node-x")
    assert len(cache) == 1  # and gone once the next put comes after a TTL
    cache.evict(["node-x"])
    assert cache.get("fresh") is None
