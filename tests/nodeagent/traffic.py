"""Real traffic for datapath tests: UDP datagrams and TCP connections between namespaces."""

from __future__ import annotations

import socket
import subprocess

from tests.nodeagent.netns import in_netns

_SENDER = """
import socket, sys, time
count, rate = int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b"x" * 64, (sys.argv[1], int(sys.argv[2])))
    if rate:
        time.sleep(1 / rate)
"""


def send_udp(
    netns: str, address: str, port: int, count: int, rate: float = 0.0
) -> subprocess.Popen[bytes]:
    """Start sending ``count`` datagrams from ``netns`` (at ``rate`` per second, 0 = flat out)."""
    import sys

    return subprocess.Popen(
        in_netns(netns, sys.executable, "-c", _SENDER, address, str(port), str(count), str(rate))
    )


def tcp_exchange(
    netns: str, server_netns: str, address: str, port: int, payload: int = 5000
) -> None:
    """One TCP connection from ``netns`` to a server in ``server_netns``, ``payload`` bytes each way."""
    import sys

    server = subprocess.Popen(
        in_netns(
            server_netns,
            sys.executable,
            "-c",
            "import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0',{port})); s.listen(); print('ready', flush=True)\n"
            "c,_=s.accept(); n=0\n"
            f"while n<{payload}:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\n"
            f"c.sendall(b'y'*{payload}); c.close()\n",
        ),
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"ready"
    client = subprocess.run(
        in_netns(
            netns,
            sys.executable,
            "-c",
            "import socket\n"
            f"c=socket.create_connection(('{address}',{port}), timeout=5); c.sendall(b'x'*{payload}); n=0\n"
            f"while n<{payload}:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\n"
            "c.close()\n",
        ),
        check=True,
        timeout=30,
    )
    assert client.returncode == 0
    server.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
