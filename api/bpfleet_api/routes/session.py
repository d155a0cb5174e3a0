"""Browser sessions: a token exchanged for an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from bpfleet_api import security
from bpfleet_api.deps import (
    SESSION_COOKIE,
    CurrentToken,
    SessionDep,
    SettingsDep,
    permissions,
)
from bpfleet_api.models import Role, Token, aware
from bpfleet_api.views import SessionRequest, SessionView

router = APIRouter(prefix="/v1/session", tags=["session"])

# Node credentials never open browser sessions: a person signs in with a person's token.
PERSON_ROLES = frozenset({Role.ADMIN, Role.CI, Role.VIEWER, Role.PROPOSER})


def _view(token: Token) -> SessionView:
    expires = aware(token.expires_at) if token.expires_at is not None else None
    return SessionView(
        name=token.name, role=token.role.value, may=permissions(token.role), expires_at=expires
    )


@router.post("", responses={401: {"description": "The token is unknown, expired or revoked."}})
def open_session(
    body: SessionRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> SessionView:
    """Sign in: exchange a token for a session cookie (the token itself is not stored
    in the browser)."""
    origin = security.lookup(session, body.token.get_secret_value())
    if origin is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown, expired or revoked token")
    if origin.session_of is not None or origin.role not in PERSON_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a {origin.role.value} token cannot open a browser session",
        )
    secret, row = security.open_session(session, origin, settings.session_ttl_seconds)
    session.commit()
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.session_ttl_seconds),
        path="/",
        secure=settings.secure_cookies or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return _view(row)


@router.get("")
def who_am_i(token: CurrentToken) -> SessionView:
    """The caller's name, role and, for a session, when it expires."""
    return _view(token)


@router.delete("", status_code=204)
def close_session(token: CurrentToken, session: SessionDep, response: Response) -> None:
    """Sign out: the session is revoked and its cookie cleared."""
    security.close_session(session, token)
    session.commit()
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
