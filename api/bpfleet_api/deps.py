"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from bpfleet_api import security
from bpfleet_api.db import get_session
from bpfleet_api.models import Role, Token
from bpfleet_api.settings import ApiSettings, get_settings

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="A bpfleet token: bpf_...")


def current_token(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = security.lookup(session, credentials.credentials)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def allow(*roles: Role) -> Callable[[Token], Token]:
    """A dependency that admits only ``roles``; 403 names what the caller lacks."""

    def check(token: Annotated[Token, Depends(current_token)]) -> Token:
        if token.role not in roles:
            wanted = " or ".join(role.value for role in roles)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {token.role.value} may not do this; needs {wanted}",
            )
        return token

    return check


READERS = (Role.ADMIN, Role.CI, Role.VIEWER)
Reader = Annotated[Token, Depends(allow(*READERS))]
Checker = Annotated[Token, Depends(allow(Role.ADMIN, Role.CI))]
Admin = Annotated[Token, Depends(allow(Role.ADMIN))]
Registrar = Annotated[Token, Depends(allow(Role.BOOTSTRAP, Role.ADMIN))]
AgentToken = Annotated[Token, Depends(allow(Role.AGENT))]
Downloader = Annotated[Token, Depends(allow(*READERS, Role.AGENT))]
