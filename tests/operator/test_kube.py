"""The Kubernetes seam: every call bounded in time, every failure one of the shared
classes, so a half-open connection never hangs a GitSource for good."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bpfleet_core import failures
from bpfleet_operator import kube
from tests.operator.kubernetes import Cluster


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a half-open API server."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        closing.set()
        listener.close()
        for connection in held:
            connection.close()


def test_every_call_gives_up_on_a_server_that_never_answers(silent_server: str) -> None:
    client = kube.Kube(kube.connect(silent_server), timeout=0.5)
    calls = {
        "get": lambda: client.get("bpfprograms", None, "alpha"),
        "create": lambda: client.create("bpfprograms", None, {"metadata": {"name": "a"}}),
        "patch": lambda: client.patch("bpfprograms", None, "alpha", {}),
        "status": lambda: client.patch_status("gitsources", "default", "fleet", {}),
        "delete": lambda: client.delete("bpfprograms", None, "alpha"),
        "secret": lambda: client.secret("default", "push"),
    }
    outcomes: dict[str, BaseException | None] = {}

    def run(name: str) -> None:
        try:
            calls[name]()
            outcomes[name] = None
        except BaseException as error:  # what it raised is the result
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)  # generous: each call gives up after half a second
    assert not [thread for thread in threads if thread.is_alive()], "a call is still waiting"
    for name, outcome in outcomes.items():
        assert isinstance(outcome, failures.TemporaryFailure), (name, outcome)


def test_failures_are_sorted_by_status(cluster: Cluster) -> None:
    client = kube.Kube(kube.connect(cluster.url))
    assert client.get("bpfprograms", None, "absent") is None
    with pytest.raises(failures.NotFound):
        client.secret("default", "absent")
    with pytest.raises(failures.NotFound):
        client.patch("bpfprograms", None, "absent", {"spec": {}})
    client.delete("bpfprograms", None, "absent")  # absent already is fine
