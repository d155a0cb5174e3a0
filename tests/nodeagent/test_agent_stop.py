"""An agent in API mode stops within 2 s of SIGTERM (a node's shutdown or a rolling
restart waits on it), whether its long-poll is open at a real API or the API answers
nothing at all. The bound is the issue's acceptance, measured on the real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests import services
from tests.nodeagent.conftest import AgentEnv
from tests.polling import wait_for

pytestmark = [pytest.mark.bpf, pytest.mark.services]
STOP_BOUND_SECONDS = 2.0


class SilentServer:
    """Accepts connections and never answers a byte: an API that hangs."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


def _start(agent_env: AgentEnv, url: str, bootstrap: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        **agent_env.environment(),
        "BPFLEET_AGENT_NODE_NAME": f"stop-{uuid.uuid4().hex[:8]}",
        "BPFLEET_AGENT_API_URL": url,
        "BPFLEET_AGENT_ALLOW_INSECURE_HTTP": "true",
        "BPFLEET_AGENT_BOOTSTRAP_TOKEN": bootstrap,
        "BPFLEET_AGENT_LONG_POLL_WAIT": "300",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bpfleet_agent"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _seconds_to_stop(agent: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    return time.monotonic() - started


def _long_polls(api: services.Api) -> int:
    with api.client() as client:
        found = re.search(r"^bpfleet_long_polls ([0-9.]+)$", client.get("/metrics").text, re.M)
    return int(float(found.group(1))) if found else 0


def test_sigterm_with_a_long_poll_open(agent_env: AgentEnv, fleet_api: services.Api) -> None:
    agent = _start(agent_env, fleet_api.url, fleet_api.bootstrap_token)
    try:
        wait_for(lambda: _long_polls(fleet_api) >= 1, 60, "the agent's long-poll")
        assert _seconds_to_stop(agent) <= STOP_BOUND_SECONDS
        assert agent.returncode == 0
    finally:
        if agent.poll() is None:
            agent.kill()


def test_sigterm_while_the_api_answers_nothing(agent_env: AgentEnv) -> None:
    server = SilentServer()
    agent = _start(agent_env, server.url, "bootstrap-of-a-silent-api")
    try:
        # Both threads are in a call that will not be answered (registration, first).
        wait_for(lambda: len(server.accepted) >= 1, 60, "the agent to call the API")
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url, timeout=0.2)  # it really does not answer
        assert _seconds_to_stop(agent) <= STOP_BOUND_SECONDS
    finally:
        if agent.poll() is None:
            agent.kill()
        server.close()
