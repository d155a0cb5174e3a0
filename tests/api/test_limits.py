"""The front door: strangers are refused before their body is read, every body is capped
by route while it streams in, malformed requests get a client error naming the problem;
and a burst of large unauthenticated bodies grows neither the API's memory nor a table."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from bpfleet_api import db, models  # noqa: F401 - models fill the metadata counted below
from sqlalchemy import func, select
from sqlmodel import SQLModel

from tests import services

pytestmark = pytest.mark.services

MiB = 1024 * 1024


def _exchange(api: services.Api, head: str, body: bytes = b"", timeout: float = 30) -> int:
    """Send ``head`` (request line and headers) and the first ``body`` bytes, then read
    the status line. A server that waits for the rest of a declared body never answers:
    the read times out and the test fails."""
    address = urlsplit(api.url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as raw:
        raw.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode()
    return int(status_line.split(" ")[1])


def _head(method: str, path: str, length: int, *headers: str) -> str:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: bpfleet",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *headers,
    ]
    return "\n".join(lines) + "\n"


def test_a_stranger_is_refused_before_the_body_is_read(api: services.Api) -> None:
    # 20 MiB declared, 1 KiB sent: only a server that never reads the body answers.
    for credential in ((), ("Authorization: Bearer bpf_not-a-token",), ("Cookie: x=y",)):
        status = _exchange(api, _head("PUT", "/v1/programs/x", 20 * MiB, *credential), b"{" * 1024)
        assert status == 401, credential
    boundary = uuid.uuid4().hex
    multipart = _head("POST", "/v1/artifacts", 20 * MiB, "Authorization: Bearer wrong").replace(
        "application/json", f"multipart/form-data; boundary={boundary}"
    )
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="object"; filename="o"\r\n\r\n'
    assert _exchange(api, multipart, part.encode() + b"\0" * 1024) == 401
    with httpx.Client(base_url=api.url) as browser:
        browser.post("/v1/session", json={"token": api.admin_token})
        cookie = f"Cookie: bpfleet_session={browser.cookies['bpfleet_session']}"
    # A session cookie without the UI's header writes nothing, and is read no further.
    assert _exchange(api, _head("PUT", "/v1/programs/x", 20 * MiB, cookie), b"{") == 403


def test_bodies_are_capped_by_route_while_they_stream(api: services.Api) -> None:
    admin = f"Authorization: Bearer {api.admin_token}"
    # A declared length over the cap is refused before anything is read.
    for method, path, length in (
        ("PUT", "/v1/programs/x", MiB + 1),
        ("PUT", "/v1/agent/endpoints", 2 * MiB),
        ("POST", "/v1/artifacts", 64 * MiB + 1),
        ("POST", "/v1/session", 17 * 1024),
    ):
        status = _exchange(api, _head(method, path, length, admin), b"{")
        assert status == 413, path

    def chunks(total: int, first: bytes = b'{"spec": "', size: int = MiB) -> Iterator[bytes]:
        yield first
        for _ in range(total // size):
            yield b"x" * size

    with api.client() as client:
        streamed = client.post("/v1/validate", content=chunks(2 * MiB))  # no length: chunked
        assert streamed.status_code == 413
        assert "larger than this route takes (1048576 bytes)" in streamed.json()["detail"]
        boundary = uuid.uuid4().hex
        part = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=object; filename=o\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        upload = client.post(
            "/v1/artifacts",
            content=chunks(65 * MiB, part.encode()),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert upload.status_code == 413
        assert "(67108864 bytes)" in upload.json()["detail"]
        # Under the caps, the same routes work.
        fits = client.post("/v1/validate", json={"spec": {"x": "y" * (MiB // 2)}})
        assert fits.status_code == 200
        assert fits.json()["valid"] is False


def test_malformed_requests_get_a_client_error_naming_the_problem(api: services.Api) -> None:
    with api.client() as client:
        broken = client.put(
            "/v1/programs/x", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422
        assert "JSON" in broken.text
        wrong_type = client.put("/v1/programs/x", content=b"x", headers={"Content-Type": "text/x"})
        assert wrong_type.status_code == 422
    for authorization in ("Basic YTpi", "Bearer", "Token abc"):
        with httpx.Client(base_url=api.url, headers={"Authorization": authorization}) as client:
            refused = client.get("/v1/nodes")
        assert refused.status_code == 401, authorization
        assert refused.json()["detail"]
    admin = f"Authorization: Bearer {api.admin_token}"
    for length in ("-1", "lots", "1, 2"):
        head = _head("PUT", "/v1/programs/x", 0, admin).replace(
            "Content-Length: 0", f"Content-Length: {length}"
        )
        status = _exchange(api, head, b"{}")
        assert 400 <= status < 500, length


def _row_counts(url: str) -> dict[str, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table.name: int(
                    connection.execute(select(func.count()).select_from(table)).scalar_one()
                )
                for table in SQLModel.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _send_everything(api: services.Api, head: str, size: int) -> None:
    """Send a whole body, whatever the server says meanwhile (it may close on us)."""
    address = urlsplit(api.url)
    block = b"[" * MiB
    try:
        with socket.create_connection((address.hostname, address.port), timeout=60) as raw:
            raw.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
            for _ in range(size // MiB):
                raw.sendall(block)
            raw.recv(4096)
    except OSError:
        pass  # refused and closed before the body ended: as it should be


def test_a_burst_of_large_unauthenticated_bodies_grows_neither_memory_nor_tables(
    api: services.Api,
) -> None:
    assert api.process is not None
    server = psutil.Process(api.process.pid)
    url = api.environment["BPFLEET_API_DATABASE_URL"]
    rows = _row_counts(url)
    baseline = server.memory_info().rss
    peak = baseline
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [
        threading.Thread(
            target=_send_everything,
            args=(api, _head(method, path, 20 * MiB, *credential), 20 * MiB),
        )
        for method, path, credential in [
            ("PUT", "/v1/programs/burst", ()),
            ("POST", "/v1/artifacts", ("Authorization: Bearer bpf_wrong",)),
            ("PUT", "/v1/policies/a/b", ("Authorization: Bearer nope",)),
            ("POST", "/v1/agent/register", ()),
        ]
        * 4
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    done.set()
    watcher.join()
    # Sixteen 20 MiB bodies: read, they would be 320 MiB; refused unread, a few buffers.
    assert peak - baseline < 32 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"
    assert _row_counts(url) == rows
    with api.client() as client:
        assert client.get("/v1/nodes").status_code == 200  # and the API serves on
