"""Tokens: minted (the secret shown once), listed (never the secret), revoked."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from bpfleet_api import security
from bpfleet_api.changes import NotFound
from bpfleet_api.deps import Admin, SessionDep
from bpfleet_api.models import Role, Token, aware
from bpfleet_api.routes._changes import revoked
from bpfleet_api.views import TokenRequest, TokenResult, TokenView

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", status_code=201)
def create_token(request: TokenRequest, session: SessionDep, _: Admin) -> TokenResult:
    """Mint a token, valid until revoked or until it expires; its secret is shown once."""
    expires = security.expiry(request.expires_at, request.expires_in_seconds)
    secret, row = security.mint(session, request.name, Role(request.role), expires_at=expires)
    session.commit()
    assert row.id is not None  # set by the commit
    return TokenResult(
        id=row.id, name=row.name, role=row.role.value, token=secret, expires_at=expires
    )


def _view(token: Token) -> TokenView:
    view = TokenView.model_validate(token)
    return view.model_copy(
        update={
            "role": token.role.value,
            "expires_at": aware(token.expires_at) if token.expires_at else None,
            "revoked_at": aware(token.revoked_at) if token.revoked_at else None,
            "created_at": aware(token.created_at),
        }
    )


@router.get("")
def list_tokens(
    session: SessionDep,
    _: Admin,
    role: Annotated[
        Literal["admin", "ci", "viewer", "bootstrap", "agent"] | None,
        Query(description="Only tokens of this role."),
    ] = None,
    include_revoked: Annotated[
        bool, Query(alias="includeRevoked", description="Revoked tokens too.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[TokenView]:
    """Tokens (agents' and browser sessions' too), oldest first; never their secrets."""
    rows = security.list_tokens(session, Role(role) if role else None, include_revoked, limit)
    return [_view(row) for row in rows]


@router.delete("/{token_id}", status_code=204)
def revoke_token(token_id: TokenId, request: Request, session: SessionDep, _: Admin) -> Response:
    """Revoke a token, and the browser sessions opened with it; an agent token stops
    working in every API process at once. Revoking a revoked token changes nothing."""
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound(f"token {token_id} does not exist")
    security.revoke(session, token)
    session.commit()
    if token.node is not None:
        revoked(request, [token.node])
    return Response(status_code=204)
