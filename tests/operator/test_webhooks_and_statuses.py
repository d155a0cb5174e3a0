"""Push notifications (a real receiver on a real port) and kstatus conditions."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bpfleet_core.resources import BpfProgramStatus
from bpfleet_operator import statuses, webhooks

SECRET = b"s3cret"


@pytest.fixture
def receiver() -> Iterator[tuple[webhooks.Receiver, list[tuple[str, str]]]]:
    woken: list[tuple[str, str]] = []

    def secret_for(namespace: str, name: str) -> bytes | None:
        return SECRET if (namespace, name) == ("default", "fleet") else None

    running = webhooks.Receiver("127.0.0.1", 0, secret_for, lambda *key: woken.append(key))
    running.start()
    try:
        yield running, woken
    finally:
        running.stop()


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
