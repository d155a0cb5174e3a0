"""Push notifications (a real receiver on a real port) and kstatus conditions."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from pydantic import SecretStr, ValidationError

from bpfleet_cli.localfleet import free_port
from bpfleet_core.resources import BpfProgramStatus
from bpfleet_operator import statuses, webhooks
from bpfleet_operator.settings import OperatorSettings
from tests.gitrepos import GitRepo
from tests.operator.processes import BPFLEET, running
from tests.polling import wait_for

SECRET = b"s3cret"


def start_receiver(woken: list[tuple[str, str]], **limits: Any) -> webhooks.Receiver:
    def secret_for(namespace: str, name: str) -> bytes | None:
        if (namespace, name) == ("default", "empty"):
            return b""
        return SECRET if (namespace, name) == ("default", "fleet") else None

    return webhooks.Receiver(
        "127.0.0.1", 0, secret_for, lambda *key: woken.append(key), **limits
    ).start()


@pytest.fixture
def receiver() -> Iterator[tuple[webhooks.Receiver, list[tuple[str, str]]]]:
    woken: list[tuple[str, str]] = []
    running = start_receiver(woken)
    try:
        yield running, woken
    finally:
        running.stop()


def raw(port: int, request: bytes, wait: float = 10) -> bytes:
    """Send ``request`` as it is and read until the server closes the connection, or
    ``wait`` seconds (generous: a well-behaved receiver answers at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(request)
        received = b""
        try:
            while chunk := connection.recv(4096):
                received += chunk
        except TimeoutError:
            return received + b"<no end>"
        return received


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}{path}", content=body, headers=headers)


def signed(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


def test_only_signed_notifications_for_known_sources_wake_them(
    receiver: tuple[webhooks.Receiver, list[tuple[str, str]]],
) -> None:
    server, woken = receiver
    body = b'{"ref": "refs/heads/main"}'
    path = "/hooks/gitsources/default/fleet"
    assert post(server.port, path, body, signed(body, b"wrong")).status_code == 401
    assert post(server.port, path, body, {}).status_code == 401
    assert (
        post(server.port, "/hooks/gitsources/default/other", body, signed(body)).status_code == 401
    )
    assert post(server.port, "/elsewhere", body, signed(body)).status_code == 404
    assert woken == []
    assert post(server.port, path, body, signed(body)).status_code == 202
    assert post(server.port, path, body, {"X-Gitlab-Token": SECRET.decode()}).status_code == 202
    assert woken == [("default", "fleet"), ("default", "fleet")]


def head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


FLEET = "/hooks/gitsources/default/fleet"


@pytest.mark.parametrize(
    "length",
    [b"-1", b"abc", b"1e3", b"0x10", b"+5", "\u0665".encode()],  # the last: a digit five
)
def test_a_content_length_that_is_not_a_number_of_bytes_is_refused(
    receiver: tuple[webhooks.Receiver, list[tuple[str, str]]], length: bytes
) -> None:
    server, woken = receiver
    request = head(FLEET).replace(b"\r\n\r\n", b"\r\nContent-Length: " + length + b"\r\n\r\n")
    answer = raw(server.port, request)
    assert answer.startswith(b"HTTP/1.0 400"), answer
    assert woken == []


def test_nothing_is_read_for_an_unknown_source(
    receiver: tuple[webhooks.Receiver, list[tuple[str, str]]],
) -> None:
    server, _ = receiver
    # A body is announced and never sent: the answer must not wait for it.
    answer = raw(server.port, head("/hooks/gitsources/default/other", **{"Content-Length": "1000"}))
    assert answer.startswith(b"HTTP/1.0 401"), answer


def test_a_client_that_sends_nothing_is_dropped() -> None:
    woken: list[tuple[str, str]] = []
    server = start_receiver(woken, timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as idle:
            assert idle.recv(1024) == b""  # closed by the server, not by our timeout
        # It still serves others.
        body = b"{}"
        assert post(server.port, FLEET, body, signed(body)).status_code == 202
    finally:
        server.stop()


def test_connections_beyond_the_limit_are_refused_at_once() -> None:
    woken: list[tuple[str, str]] = []
    server = start_receiver(woken, connections=2, timeout=30)
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        body = b"{}"
        refused = post(server.port, FLEET, body, signed(body))
        assert refused.status_code == 503
        for connection in idle:
            connection.close()

        def served() -> bool:
            return post(server.port, FLEET, body, signed(body)).status_code == 202

        wait_for(served, 30, "a slot to be free again")
        assert woken == [("default", "fleet")]
    finally:
        server.stop()


def test_non_ascii_signatures_and_empty_secrets_are_refused_not_crashes(
    receiver: tuple[webhooks.Receiver, list[tuple[str, str]]],
) -> None:
    server, woken = receiver
    body = b"{}"
    for name, value in (("X-Hub-Signature-256", "sha256=\xe9t\xe9"), ("X-Gitlab-Token", "\xe9")):
        request = head(FLEET, **{name: value, "Content-Length": "2"}) + body
        assert raw(server.port, request).startswith(b"HTTP/1.0 401")
    # A source whose secret is empty matches no token, the empty one included.
    empty = "/hooks/gitsources/default/empty"
    assert post(server.port, empty, body, {"X-Gitlab-Token": ""}).status_code == 401
    assert post(server.port, empty, body, signed(body, b"")).status_code == 401
    assert woken == []


def test_standalone_refuses_an_empty_secret_and_listens_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        OperatorSettings(webhook_secret=SecretStr(""))
    repo = GitRepo(tmp_path / "repo")
    repo.commit("nothing")
    source = tmp_path / "source.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "bpfleet.io/v1alpha1",
                "kind": "GitSource",
                "metadata": {"name": "fleet"},
                "spec": {"url": str(repo.path), "interval": "1h"},
            }
        )
    )
    port = free_port()
    environment = {
        **os.environ,
        "BPFLEET_OPERATOR_API_URL": f"http://127.0.0.1:{free_port()}",
        "BPFLEET_OPERATOR_STATE_DIR": str(tmp_path / "state"),
        "BPFLEET_OPERATOR_WEBHOOK_PORT": str(port),
        "BPFLEET_OPERATOR_WEBHOOK_SECRET": "s3cret",
    }
    environment.pop("BPFLEET_OPERATOR_WEBHOOK_HOST", None)
    with running([BPFLEET, "operator", "standalone", str(source)], environment, tmp_path / "log"):

        def listening() -> list[str] | None:
            found = [
                c.laddr.ip
                for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            return found or None

        assert wait_for(listening, 30, "the receiver to listen") == ["127.0.0.1"]
    environment["BPFLEET_OPERATOR_WEBHOOK_SECRET"] = ""
    done = subprocess.run(
        [BPFLEET, "operator", "standalone", str(source)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "must not be empty" in done.stderr
    assert "Traceback" not in done.stderr


def view(
    attached: int, desired: int, phase: str = "Succeeded", **summary: int
) -> dict[str, object]:
    counts = {
        "desired": desired,
        "attached": attached,
        "failed": 0,
        "incompatible": 0,
        "pending": 0,
    }
    return {
        "generation": 3,
        "killed": False,
        "summary": {**counts, **summary},
        "rollout": {"toGeneration": 3, "phase": phase, "step": 1, "message": "budget exceeded"},
    }


def test_program_conditions_follow_the_rollout_and_keep_transition_times() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = statuses.program_status(
        view(1, 3, "Progressing", pending=2), BpfProgramStatus(), start, 7, "main@sha1:abc"
    )
    kinds = {c.type: c for c in first.conditions}
    assert (kinds["Ready"].status, kinds["Ready"].reason) == ("False", "Progressing")
    assert kinds["Reconciling"].status == "True"
    assert "rollout step 2, 1/3 attached" in kinds["Ready"].message
    assert (first.ready, first.observed_generation, first.api_generation) == ("1/3", 7, 3)

    later = start + timedelta(seconds=5)
    again = statuses.program_status(view(2, 3, "Progressing", pending=1), first, later, 7, "r")
    ready = {c.type: c for c in again.conditions}["Ready"]
    assert ready.last_transition_time == "2026-01-01T00:00:00Z"  # still False: no transition

    done = statuses.program_status(view(3, 3, incompatible=0), again, later, 7, "r")
    kinds = {c.type: c for c in done.conditions}
    assert (kinds["Ready"].status, kinds["Ready"].reason) == ("True", "Attached")
    assert kinds["Ready"].last_transition_time == "2026-01-01T00:00:05Z"
    assert set(kinds) == {"Ready"}  # Reconciling and Stalled are gone once false

    failed = statuses.program_status(view(1, 3, "RolledBack"), done, later, 7, "r")
    kinds = {c.type: c for c in failed.conditions}
    assert kinds["Stalled"].reason == "RolloutRolledBack"
    assert "budget exceeded" in kinds["Stalled"].message


def test_incompatible_nodes_do_not_keep_a_program_from_ready() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    found = statuses.program_status(view(2, 3, incompatible=1), BpfProgramStatus(), now, 1, "r")
    ready = found.conditions[0]
    assert (ready.status, ready.message) == ("True", "2/3 attached, 1 incompatible")
    nothing = statuses.program_status(view(0, 0), BpfProgramStatus(), now, 1, "r")
    assert nothing.conditions[0].reason == "NoNodesSelected"
