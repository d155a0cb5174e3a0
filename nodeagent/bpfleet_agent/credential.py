"""This node's credential: the node token the fleet API issued at registration.

Kept 0600 in the state directory, obtained with the bootstrap token, and renewed once
when the API rejects it. The watcher, the reporter and the artifact downloads share it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from bpfleet_agent.api_client import ApiClient
from bpfleet_core import failures, files
from bpfleet_core.protocol import Registration

log = logging.getLogger(__name__)


class NodeCredential:
    """This node's token. Thread-safe: both background threads and the artifact
    download use it, and only one of them may register at a time.

    A rejected token (401) is dropped and the node registers again with the bootstrap
    token, but once only: if the token just issued is rejected too, registering again
    would only add nodes to the API, so the agent keeps its token, backs off and says so.
    """

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        api_url: str,
        bootstrap_token: str | None,
        registration: Callable[[], Registration],
        on_registered: Callable[[Registration], None] = lambda _registration: None,
    ) -> None:
        self.path = path
        self.node = node
        self.api_url = api_url
        self._bootstrap_token = bootstrap_token
        self._registration = registration
        self._on_registered = on_registered
        self._lock = threading.Lock()
        self._renewed_unconfirmed = False
        self._token, self._node_key = self._load()
        self.registrations = 0

    def _load(self) -> tuple[str | None, str | None]:
        """The stored token and node key (either may be absent)."""
        try:
            stored = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable node credential %s: %s", self.path, error)
            return None, None
        if not isinstance(stored, dict):
            log.warning("ignoring node credential %s: not a JSON object", self.path)
            return None, None
        # A credential belongs to one node name at one API; with either changed it is useless.
        if stored.get("node") != self.node or stored.get("apiUrl") != self.api_url:
            log.warning(
                "node credential %s is for node %r at %s, not %r at %s; registering anew",
                self.path,
                stored.get("node"),
                stored.get("apiUrl"),
                self.node,
                self.api_url,
            )
            return None, None
        token, key = stored.get("token"), stored.get("nodeKey")
        return (
            token if isinstance(token, str) else None,
            key if isinstance(key, str) else None,
        )

    def _store(self) -> None:
        document = {
            "node": self.node,
            "apiUrl": self.api_url,
            "token": self._token,
            "nodeKey": self._node_key,
        }
        files.write_atomically(self.path, json.dumps(document), mode=0o600)

    def current(self) -> str | None:
        with self._lock:
            return self._token

    def ensure(self, client: ApiClient) -> str:
        """The token, registering first when there is none; raises a ``Failure``."""
        with self._lock:
            if self._token is not None:
                return self._token
            if self._bootstrap_token is None:
                raise failures.PermanentFailure(
                    f"no node credential in {self.path} and no BPFLEET_AGENT_BOOTSTRAP_TOKEN "
                    "to register with"
                )
            registration = self._registration()
            if self._node_key is not None:
                # The proof that this name is ours: a taken name registers again only with it.
                registration = registration.model_copy(
                    update={"node_key": SecretStr(self._node_key)}
                )
            try:
                result = client.register(self._bootstrap_token, registration)
            except failures.Unauthorized as error:
                # Not this node's credential: dropping it would change nothing.
                raise failures.PermanentFailure(
                    f"the API rejected the bootstrap token: {error}", status=error.status
                ) from error
            self._token, self._node_key = result.token, result.node_key
            self._store()
            self.registrations += 1
            log.info("registered node %s with the fleet API at %s", self.node, self.api_url)
            self._on_registered(registration)
            return result.token

    def rejected(self, token: str) -> bool:
        """The API answered 401 to ``token``; True when the next ``ensure`` registers."""
        with self._lock:
            if token != self._token:
                return self._token is None  # someone renewed (or dropped) it already
            if self._bootstrap_token is None:
                log.error(
                    "the fleet API rejects this node's credential (%s) and there is no "
                    "bootstrap token to register again with",
                    self.path,
                )
                return False
            if self._renewed_unconfirmed:
                log.error(
                    "the fleet API rejects the credential it issued just now; not "
                    "registering again (is this node name taken or revoked?)"
                )
                return False
            log.warning(
                "the fleet API rejects this node's credential; registering again with the "
                "bootstrap token"
            )
            self._token = None
            self._renewed_unconfirmed = True
            try:
                self._store()  # the node key stays: it is what registers this name again
            except OSError as error:
                log.warning("cannot update the node credential %s: %s", self.path, error)
            return True

    def confirmed(self) -> None:
        """A call with the current token succeeded: a later 401 may renew it again."""
        with self._lock:
            self._renewed_unconfirmed = False
