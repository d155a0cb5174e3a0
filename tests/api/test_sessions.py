"""Browser sessions: a token exchanged for an HttpOnly cookie that acts as that token,
writes only with the UI's header, and dies with sign-out, expiry or its token."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from bpfleet_api import db, security
from bpfleet_api.models import Role, Token, aware, utcnow
from sqlmodel import Session

from tests import services

pytestmark = pytest.mark.services


def _browser(api: services.Api) -> httpx.Client:
    """A client that, like a browser, sends only what its cookie jar holds."""
    return httpx.Client(base_url=api.url, timeout=30)


def _sign_in(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/v1/session", json={"token": token})


def test_a_token_opens_a_cookie_session_that_acts_as_it(api: services.Api) -> None:
    with _browser(api) as browser:
        assert browser.get("/v1/nodes").status_code == 401
        response = _sign_in(browser, api.admin_token)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "admin"
        assert response.json()["role"] == "admin"
        assert response.json()["expiresAt"] is not None
        cookie = response.headers["set-cookie"].lower()
        assert "bpfleet_session=" in cookie
        for attribute in ("httponly", "samesite=strict", "path=/"):
            assert attribute in cookie
        assert api.admin_token not in response.headers["set-cookie"]

        assert browser.get("/v1/session").json()["role"] == "admin"
        assert browser.get("/v1/nodes").status_code == 200


def test_a_cookie_writes_only_with_the_ui_header(api: services.Api) -> None:
    with _browser(api) as browser:
        _sign_in(browser, api.admin_token)
        body = {"name": f"ui-{uuid.uuid4().hex[:6]}", "role": "viewer"}
        refused = browser.post("/v1/tokens", json=body)
        assert refused.status_code == 403
        assert "X-Requested-By" in refused.json()["detail"]
        allowed = browser.post("/v1/tokens", json=body, headers={"X-Requested-By": "bpfleet-ui"})
        assert allowed.status_code == 201, allowed.text


def test_sign_out_ends_the_session(api: services.Api) -> None:
    with _browser(api) as browser:
        _sign_in(browser, api.admin_token)
        cookie = browser.cookies["bpfleet_session"]
        response = browser.delete("/v1/session", headers={"X-Requested-By": "bpfleet-ui"})
        assert response.status_code == 204
        assert "bpfleet_session" not in browser.cookies
    # The old cookie, replayed, is dead on the server too.
    with _browser(api) as replay:
        replay.cookies.set("bpfleet_session", cookie)
        assert replay.get("/v1/nodes").status_code == 401


def test_only_valid_person_tokens_open_sessions(api: services.Api) -> None:
    with _browser(api) as browser:
        assert _sign_in(browser, "bpf_not-a-token").status_code == 401
        bootstrap = _sign_in(browser, api.bootstrap_token)
        assert bootstrap.status_code == 403
        assert "bootstrap" in bootstrap.json()["detail"]
        assert _sign_in(browser, "").status_code in (401, 422)
        assert "bpfleet_session" not in browser.cookies
    with api.client() as admin:
        viewer = admin.post("/v1/tokens", json={"name": "sess-viewer", "role": "viewer"})
    with _browser(api) as browser:
        assert _sign_in(browser, viewer.json()["token"]).json()["role"] == "viewer"
        # A session is not a token to exchange again.
        session_secret = browser.cookies["bpfleet_session"]
        again = _sign_in(browser, session_secret)
        assert again.status_code == 403


def test_sessions_die_with_their_token_and_their_time(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/sessions.db")
    db.migrate(engine)
    with Session(engine) as session:
        secret, _ = security.mint(session, "alice", Role.VIEWER)
        session.commit()
        origin = security.lookup(session, secret)
        assert origin is not None
        cookie, row = security.open_session(session, origin, ttl_seconds=60)
        session.commit()
        assert security.lookup(session, cookie) is not None

        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()
        assert security.lookup(session, cookie) is None

        cookie, _ = security.open_session(session, origin, ttl_seconds=60)
        origin.revoked_at = utcnow()
        session.add(origin)
        session.commit()
        assert security.lookup(session, cookie) is None
        assert security.lookup(session, secret) is None

        # A session never outlives the token it was opened with.
        expiring = Token(
            name="bob",
            role=Role.VIEWER,
            digest=security.digest("bpf_bob"),
            expires_at=utcnow() + timedelta(seconds=5),
        )
        session.add(expiring)
        session.commit()
        _, short = security.open_session(session, expiring, ttl_seconds=3600)
        assert short.expires_at is not None
        assert aware(short.expires_at) <= aware(expiring.expires_at)
    engine.dispose()


def test_the_api_docs_are_for_readers_and_open_with_a_session(api: services.Api) -> None:
    with _browser(api) as browser:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert browser.get(path).status_code == 401, path
        _sign_in(browser, api.admin_token)
        docs = browser.get("/docs")
        assert docs.status_code == 200
        assert "/openapi.json" in docs.text
        assert browser.get("/openapi.json").json()["info"]["title"] == "bpfleet"


def test_the_openapi_document_builds_in_process() -> None:
    """The UI's build generates its client this way: no server, no settings, no tokens."""
    from bpfleet_api.main import create_app

    document = create_app().openapi()
    paths = document["paths"]
    for path in (
        "/v1/tokens/{token_id}",
        "/v1/namespaces/{name}",
        "/v1/nodes/{name}/pod-cidrs",
        "/v1/nodes/{name}/workloads",
        "/v1/node-tombstones/{name}",
    ):
        assert path in paths, path
    assert not {"/docs", "/redoc", "/openapi.json"} & set(paths)


@pytest.mark.parametrize(
    ("role", "may"),
    [
        ("admin", ["read", "check", "propose", "administer"]),
        ("ci", ["read", "check"]),
        ("viewer", ["read"]),
        ("proposer", ["read", "propose"]),
    ],
)
def test_a_session_says_what_its_role_may_do_as_the_routes_decide(
    api: services.Api, role: str, may: list[str]
) -> None:
    """The dashboard shows only what a session may do; the routes refuse the rest."""
    if role == "admin":
        token = api.admin_token
    else:
        with api.client() as admin:
            minted = admin.post("/v1/tokens", json={"name": f"{role}-may", "role": role})
            token = minted.json()["token"]
    with _browser(api) as browser:
        assert _sign_in(browser, token).json()["may"] == may
        assert browser.get("/v1/session").json()["may"] == may
    with api.client(token) as client:
        # check: validating manifests; propose: sharing a draft; administer: tokens.
        answers = {
            "check": client.post("/v1/validate", json={"spec": {}}),
            "propose": client.post("/v1/drafts", json={"text": "a: 1\n"}),
            "administer": client.get("/v1/tokens"),
        }
    for permission, response in answers.items():
        assert (response.status_code != 403) == (permission in may), (permission, response.text)
