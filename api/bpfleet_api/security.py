"""Bearer tokens and node keys: minted once, stored as digests, looked up by digest;
revoked, expired or rotated; and the cache that spares agents' calls a lookup."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from bpfleet_api.changes import Invalid
from bpfleet_api.models import Node, Role, Token, aware, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bpf_"  # noqa: S105 - a marker for secret scanners, not a secret


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def mint(
    session: Session,
    name: str,
    role: Role,
    node: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, Token]:
    """Create a token; return its secret (shown once) and its row. Only the digest is kept."""
    secret = new_secret()
    row = Token(name=name, role=role, digest=digest(secret), node=node, expires_at=expires_at)
    session.add(row)
    return secret, row


def expiry(at: datetime | None, in_seconds: int | None) -> datetime | None:
    """When a token being minted expires (never: None); refuses a time already past."""
    now = utcnow()
    expires = now + timedelta(seconds=in_seconds) if in_seconds is not None else at
    if expires is not None and expires <= now:
        raise Invalid(f"expiresAt {expires.isoformat()} is in the past")
    return expires


def ensure(session: Session, name: str, role: Role, secret: str) -> None:
    """Make a configured secret (the admin or bootstrap token from settings) valid, and
    revoke the earlier configured ones of that name: changing the setting rotates it.
    A configured secret an admin revoked stays revoked."""
    wanted = digest(secret)
    current = session.exec(select(Token).where(Token.digest == wanted)).first()
    if current is None:
        session.add(Token(name=name, role=role, digest=wanted, configured=True))
    elif current.revoked_at is not None:
        log.error("the configured %s token was revoked; configure a new one", name)
    previous = session.exec(
        select(Token).where(
            Token.name == name,
            col(Token.configured).is_(True),
            Token.digest != wanted,
            col(Token.revoked_at).is_(None),
        )
    ).all()
    for token in previous:
        log.info("revoking the previous configured %s token (id %s)", name, token.id)
        revoke(session, token)


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
    secret = new_secret()
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


def revoke(session: Session, token: Token) -> list[Token]:
    """Revoke a token and the browser sessions opened with it; return what was revoked."""
    now = utcnow()
    revoked = []
    sessions = session.exec(
        select(Token).where(Token.session_of == token.id, col(Token.revoked_at).is_(None))
    ).all()
    for row in (token, *sessions):
        if row.revoked_at is None:
            row.revoked_at = now
            session.add(row)
            revoked.append(row)
    return revoked


def revoke_node_tokens(session: Session, node: str) -> None:
    for token in session.exec(
        select(Token).where(Token.node == node, col(Token.revoked_at).is_(None))
    ).all():
        revoke(session, token)


def list_tokens(
    session: Session, role: Role | None, include_revoked: bool, limit: int
) -> list[Token]:
    query = select(Token).order_by(col(Token.id)).limit(limit)
    if role is not None:
        query = query.where(Token.role == role)
    if not include_revoked:
        query = query.where(col(Token.revoked_at).is_(None))
    return list(session.exec(query).all())


# ------------------------------------------------------------------------ node keys


def proves_node(node: Node, key: str | None) -> bool:
    """Does ``key`` match the node's key? (A node registered before keys has none.)"""
    if key is None or node.key_digest is None:
        return False
    return hmac.compare_digest(digest(key), node.key_digest)


# --------------------------------------------------------------------------- the cache


class TokenCache:
    """Agent secrets recently seen valid, for at most ``ttl_seconds``, by their node. A
    revocation evicts them here at once, and in other API processes when the revocation
    reaches them (published on Redis); if that message is lost, within the TTL."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str]] = {}
        self._evicted: set[str] = set()
        self._next_purge = clock() + ttl_seconds

    def get(self, secret: str) -> str | None:
        with self._lock:
            entry = self._entries.get(digest(secret))
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    def put(self, secret: str, node: str) -> None:
        now = self._clock()
        with self._lock:
            # Expired entries go once per TTL: each costs a pass over the cache, so not on
            # every put, and the cache never holds more than one TTL's worth of tokens.
            if now >= self._next_purge:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                self._next_purge = now + self.ttl
            self._entries[digest(secret)] = (now + self.ttl, node)

    def evict(self, nodes: Iterable[str]) -> None:
        gone = set(nodes)
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1] not in gone}
            self._evicted |= gone

    def refill(self, read: Callable[[], Iterable[tuple[str, str, datetime | None]]]) -> None:
        """Trust every valid agent token ``read`` returns (digest, node, expiry) for a
        TTL: one query keeps a whole fleet's tokens here, rather than one per agent per
        TTL. Nodes evicted while it reads stay out, and so does what it does not list."""
        with self._lock:
            self._evicted = set()
        rows = list(read())
        now, wall = self._clock(), utcnow()
        entries = {}
        for token_digest, node, expires_at in rows:
            left = self.ttl if expires_at is None else (aware(expires_at) - wall).total_seconds()
            if left > 0:
                entries[token_digest] = (now + min(self.ttl, left), node)
        with self._lock:
            evicted = self._evicted
            self._entries = {k: v for k, v in entries.items() if v[1] not in evicted}
            self._next_purge = now + self.ttl

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def agent_tokens(session: Session) -> list[tuple[str, str, datetime | None]]:
    """Every valid agent token: (digest, node, expiry)."""
    rows = session.exec(
        select(Token.digest, Token.node, Token.expires_at).where(
            Token.role == Role.AGENT,
            col(Token.revoked_at).is_(None),
            col(Token.node).is_not(None),
        )
    ).all()
    return [(token_digest, node, expires) for token_digest, node, expires in rows if node]
