"""Bearer tokens: minted once, stored as digests, checked in constant time."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import timedelta

from sqlmodel import Session, select

from bpfleet_api.models import Role, Token, aware, utcnow

TOKEN_PREFIX = "bpf_"  # noqa: S105 - a marker for secret scanners, not a secret


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(session: Session, name: str, role: Role, node: str | None = None) -> str:
    """Create a token and return its secret; only its digest is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(name=name, role=role, digest=digest(secret), node=node))
    return secret


def ensure(session: Session, name: str, role: Role, secret: str) -> None:
    """Make a configured secret (e.g. the admin token from settings) valid, idempotently."""
    wanted = digest(secret)
    if session.exec(select(Token).where(Token.digest == wanted)).first() is None:
        session.add(Token(name=name, role=role, digest=wanted))


def lookup(session: Session, secret: str) -> Token | None:
    """The valid token with this secret: not revoked, not expired, and for a browser
    session, its originating token still valid too."""
    # The digest is the lookup key, so comparison time does not depend on the secret.
    token = session.exec(select(Token).where(Token.digest == digest(secret))).first()
    now = utcnow()
    if token is None or not token.valid_at(now):
        return None
    if token.session_of is not None:
        origin = session.get(Token, token.session_of)
        if origin is None or not origin.valid_at(now):
            return None
    return token


def open_session(session: Session, origin: Token, ttl_seconds: float) -> tuple[str, Token]:
    """Exchange a token for a browser session with the same name and role: a secret of
    its own (for an HttpOnly cookie), expiring, and revoked with its originating token."""
    if origin.id is None:
        raise ValueError("a session needs a stored token")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(seconds=ttl_seconds)
    if origin.expires_at is not None:
        expires = min(expires, aware(origin.expires_at))
    row = Token(
        name=origin.name,
        role=origin.role,
        digest=digest(secret),
        session_of=origin.id,
        expires_at=expires,
    )
    session.add(row)
    return secret, row


def close_session(session: Session, token: Token) -> None:
    if token.session_of is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)


def revoke_node_tokens(session: Session, node: str) -> None:
    for token in session.exec(select(Token).where(Token.node == node, Token.revoked_at == None)):  # noqa: E711
        token.revoked_at = utcnow()
        session.add(token)


class TokenCache:
    """Secrets recently seen valid, for at most ``ttl_seconds``: the price is that a
    revocation made in another API process takes up to that long to bite here."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str]] = {}

    def get(self, secret: str) -> str | None:
        with self._lock:
            entry = self._entries.get(digest(secret))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, secret: str, node: str) -> None:
        with self._lock:
            self._entries[digest(secret)] = (time.monotonic() + self.ttl, node)

    def evict(self, node: str) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1] != node}
