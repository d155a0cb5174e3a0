"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures, and
how a request's credential is found and checked (``gate`` checks it the same way before
any body is read)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from bpfleet_api import security
from bpfleet_api.db import get_engine, get_session
from bpfleet_api.models import Role, Token
from bpfleet_api.settings import ApiSettings, get_settings
from bpfleet_api.views import Permission

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="A bpfleet token: bpf_...")


SESSION_COOKIE = "bpfleet_session"
# Sent by the UI on every request that changes something. A cross-site form cannot set
# a header, so a cookie alone never authorizes a write (SameSite=Strict is the first wall).
CSRF_HEADER = "X-Requested-By"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def presented_secret(
    method: str, authorization: str | None, cookie: str | None, requested_by: str | None
) -> str:
    """The secret a request carries: a bearer ``authorization`` header, or else the
    browser session's ``cookie`` (which writes only with the UI's header, whose value
    is ``requested_by``). Raises 401 or 403."""
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        return secret.strip()
    if cookie is None:
        raise unauthorized("missing bearer token or session")
    if method not in _SAFE_METHODS and not requested_by:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a session cookie authorizes a {method} only with the {CSRF_HEADER} header",
        )
    return cookie


def current_token(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token:
    """The caller's token: a bearer header, or else the browser session's cookie."""
    del credentials  # declared for the OpenAPI security scheme; read below with the cookie
    secret = presented_secret(
        request.method,
        request.headers.get("authorization"),
        request.cookies.get(SESSION_COOKIE),
        request.headers.get(CSRF_HEADER),
    )
    token = security.lookup(session, secret)
    if token is None:
        raise unauthorized("unknown, expired or revoked token")
    # Give the connection back while the request waits for its next thread: a request
    # holding one while waiting could leave the threads waiting for connections.
    session.commit()
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


# What each role may do, named for people (the dashboard shows only what a session may:
# ``SessionView.may``); the dependencies below admit exactly these roles.
ROLES_FOR: dict[Permission, tuple[Role, ...]] = {
    "read": (Role.ADMIN, Role.CI, Role.VIEWER, Role.PROPOSER),
    # Validate manifests and preflight them against the fleet (CI).
    "check": (Role.ADMIN, Role.CI),
    # Change Git through the operator (never desired state): proposals, merges of them,
    # shared drafts.
    "propose": (Role.ADMIN, Role.PROPOSER),
    # Everything else: desired state, rollouts, the kill switch, tokens, reconcile now.
    "administer": (Role.ADMIN,),
}


def permissions(role: Role) -> list[Permission]:
    return [permission for permission, roles in ROLES_FOR.items() if role in roles]


READERS = ROLES_FOR["read"]
Reader = Annotated[Token, Depends(allow(*READERS))]
Checker = Annotated[Token, Depends(allow(*ROLES_FOR["check"]))]
Admin = Annotated[Token, Depends(allow(*ROLES_FOR["administer"]))]
Proposer = Annotated[Token, Depends(allow(*ROLES_FOR["propose"]))]
# A new node registers with the bootstrap token; a registered one again with its node
# key, or with its own agent token; an admin may register any (``fleet.register_node``).
Registrar = Annotated[Token, Depends(allow(Role.BOOTSTRAP, Role.AGENT, Role.ADMIN))]
DOWNLOADERS = frozenset({*READERS, Role.AGENT})


# ------------------------------------------------------------------------- agent calls


@cache
def node_tokens() -> security.TokenCache:
    """Agent calls are most of the API's traffic: their tokens are looked up once per TTL."""
    return security.TokenCache(get_settings().agent_token_cache_seconds)


def forget_nodes(nodes: list[str]) -> None:
    """Drop nodes' cached credentials (after a revocation, here or in another process)."""
    node_tokens().evict(nodes)


def lookup_node(secret: str) -> str:
    """The node of an agent token (a database lookup; remembered in the cache)."""
    with Session(get_engine()) as session:
        token = security.lookup(session, secret)
    if token is None:
        raise unauthorized("unknown, expired or revoked token")
    if token.role != Role.AGENT or token.node is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {token.role.value} may not do this; needs agent"
        )
    node_tokens().put(secret, token.node)
    return token.node


async def node_of_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's node; on the event loop, reaching the database only on a cache miss."""
    if credentials is None:
        raise unauthorized("missing bearer token")
    cached = node_tokens().get(credentials.credentials)
    if cached is not None:
        return cached
    return await run_in_threadpool(lookup_node, credentials.credentials)


CallerNode = Annotated[str, Depends(node_of_caller)]


def _downloader_role(secret: str) -> Role | None:
    with Session(get_engine()) as session:
        token = security.lookup(session, secret)
    return token.role if token is not None else None


async def may_download(request: Request) -> None:
    """Readers and agents download artifacts; an agent's cached token costs no query
    (ten thousand nodes fetch the same files after a step)."""
    secret = presented_secret(
        request.method,
        request.headers.get("authorization"),
        request.cookies.get(SESSION_COOKIE),
        request.headers.get(CSRF_HEADER),
    )
    if node_tokens().get(secret) is not None:
        return
    role = await run_in_threadpool(_downloader_role, secret)
    if role is None:
        raise unauthorized("unknown, expired or revoked token")
    if role not in DOWNLOADERS:
        wanted = " or ".join(sorted(role.value for role in DOWNLOADERS))
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {role.value} may not do this; needs {wanted}"
        )


Downloader = Annotated[None, Depends(may_download)]
