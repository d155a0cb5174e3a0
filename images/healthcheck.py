#!/opt/bpfleet/bin/python
"""bpfleet-healthcheck: is the component this container runs doing its job?

    bpfleet-healthcheck [api|worker|agent|operator]

Exits 0 when it is, 1 saying why not. Without an argument the component is read from
the container's PID 1, since the api image runs both the API and the worker.

- api: ``GET /healthz`` on the loopback answers 200, over TLS when the API serves it
  (port from the API's command line, else BPFLEET_HEALTHCHECK_PORT, else 8080);
- worker: this worker (``celery@<hostname>``) answers a ping through the broker;
- agent: the agent wrote its status file within the last five minutes;
- operator: the push receiver accepts connections, when the operator runs one.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 5.0
AGENT_STATUS_MAX_AGE_SECONDS = 300.0


class Unhealthy(Exception):
    """Why the component is not doing its job."""


def main_command() -> list[str]:
    """The command line of the container's main process (PID 1); empty if unreadable."""
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def component_of(command: list[str]) -> str | None:
    words = " ".join(command)
    for marker, component in (
        ("celery", "worker"),
        ("uvicorn", "api"),
        ("bpfleet-agent", "agent"),
        ("operator", "operator"),
    ):
        if marker in words:
            return component
    return None


def option(command: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in a command line."""
    for index, word in enumerate(command):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name and index + 1 < len(command):
            return command[index + 1]
    return None


def check_api(command: list[str]) -> str:
    port = option(command, "--port") or os.environ.get("BPFLEET_HEALTHCHECK_PORT", "8080")
    # The certificate names the Service, not the loopback, and this request carries no
    # secret: TLS without verification is enough to see the API answer.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    schemes = ["https", "http"] if option(command, "--ssl-certfile") or not command else ["http"]
    problems = []
    for scheme in schemes:
        url = f"{scheme}://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as answer:  # noqa: S310 - http(s) to the loopback
                if answer.status == 200:
                    return f"{url} answered 200"
                problems.append(f"{url} answered {answer.status}")
        except (OSError, urllib.error.URLError) as error:
            problems.append(f"{url}: {error}")
    raise Unhealthy("; ".join(problems))


def check_worker() -> str:
    from bpfleet_api.tasks import app

    node = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=TIMEOUT_SECONDS)
    if not any(node in reply for reply in replies):
        raise Unhealthy(f"{node} did not answer a ping through the broker")
    return f"{node} answered a ping"


def check_agent() -> str:
    from bpfleet_agent.settings import AgentSettings

    status = AgentSettings().status_file
    try:
        age = time.time() - status.stat().st_mtime
    except OSError as error:
        raise Unhealthy(f"no agent status at {status}: {error.strerror}") from None
    if age > AGENT_STATUS_MAX_AGE_SECONDS:
        raise Unhealthy(f"the agent last wrote {status} {age:.0f}s ago")
    return f"{status} written {age:.0f}s ago"


def check_operator() -> str:
    from bpfleet_operator.settings import OperatorSettings

    settings = OperatorSettings()
    if not settings.webhook_port:
        return "no push receiver to check (BPFLEET_OPERATOR_WEBHOOK_PORT=0)"
    address = ("127.0.0.1", settings.webhook_port)
    try:
        socket.create_connection(address, timeout=TIMEOUT_SECONDS).close()
    except OSError as error:
        raise Unhealthy(f"the push receiver on port {settings.webhook_port}: {error}") from None
    return f"the push receiver accepts connections on port {settings.webhook_port}"


def main(arguments: list[str]) -> int:
    command = main_command()
    component = arguments[0] if arguments else component_of(command)
    if component not in ("api", "worker", "agent", "operator") or len(arguments) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        match component:
            case "api":
                # PID 1 is the API only when the check runs where it does.
                said = check_api(command if component_of(command) == "api" else [])
            case "worker":
                said = check_worker()
            case "agent":
                said = check_agent()
            case _:
                said = check_operator()
    except Unhealthy as problem:
        print(f"bpfleet-healthcheck: {component}: {problem}", file=sys.stderr)
        return 1
    print(f"bpfleet-healthcheck: {component}: {said}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
