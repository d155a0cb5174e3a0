from __future__ import annotations

from fastapi import APIRouter

from bpfleet_api import security
from bpfleet_api.deps import Admin, SessionDep
from bpfleet_api.models import Role
from bpfleet_api.views import TokenRequest, TokenResult

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", status_code=201)
def create_token(request: TokenRequest, session: SessionDep, _: Admin) -> TokenResult:
    """Mint a token; its secret is shown once."""
    secret = security.mint(session, request.name, Role(request.role))
    session.commit()
    return TokenResult(name=request.name, role=request.role, token=secret)
