"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from bpfleet_api import security
from bpfleet_api.db import get_session
from bpfleet_api.models import Role, Token
from bpfleet_api.settings import ApiSettings, get_settings

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="A bpfleet token: bpf_...")


SESSION_COOKIE = "bpfleet_session"
# Sent by the UI on every request that changes something. A cross-site form cannot set
# a header, so a cookie alone never authorizes a write (SameSite=Strict is the first wall).
CSRF_HEADER = "X-Requested-By"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def current_token(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token:
    """The caller's token: a bearer header, or else the browser session's cookie."""
    if credentials is not None:
        secret = credentials.credentials
    elif (cookie := request.cookies.get(SESSION_COOKIE)) is not None:
        if request.method not in _SAFE_METHODS and not request.headers.get(CSRF_HEADER):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a session cookie authorizes a {request.method} only with the {CSRF_HEADER} "
                "header",
            )
        secret = cookie
    else:
        raise _unauthorized("missing bearer token or session")
    token = security.lookup(session, secret)
    if token is None:
        raise _unauthorized("unknown, expired or revoked token")
    return token


CurrentToken = Annotated[Token, Depends(current_token)]


def allow(*roles: Role) -> Callable[[Token], Token]:
    """A dependency that admits only ``roles``; 403 names what the caller lacks."""

    def check(token: CurrentToken) -> Token:
        if token.role not in roles:
            wanted = " or ".join(role.value for role in roles)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {token.role.value} may not do this; needs {wanted}",
            )
        return token

    return check


READERS = (Role.ADMIN, Role.CI, Role.VIEWER, Role.PROPOSER)
Reader = Annotated[Token, Depends(allow(*READERS))]
Checker = Annotated[Token, Depends(allow(Role.ADMIN, Role.CI))]
Admin = Annotated[Token, Depends(allow(Role.ADMIN))]
Registrar = Annotated[Token, Depends(allow(Role.BOOTSTRAP, Role.ADMIN))]
Downloader = Annotated[Token, Depends(allow(*READERS, Role.AGENT))]
