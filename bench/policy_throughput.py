"""Policy datapath throughput: no policy, netpol and iptables with 10 / 1,000 / 10,000 CIDR rules.

Target (brief): with 10,000 CIDR rules, >= 90% of no-policy throughput and >= 5x
iptables holding the same rules.

Two pods (network namespaces) talk through a node namespace, as in ``bpfleet lab``:
client 10.88.0.1 -> node -> server 10.88.0.2. The server's ingress allows N source
CIDRs (/32s in 100.64.0.0/10 that never send; the client's own /32 is the LAST rule,
iptables' worst case and the usual one for a long list) on the measured port.

- UDP packets/s: one flow, 64-byte datagrams sent flat out from a child process for a
  few seconds; delivered = the server's rx_packets. Every packet crosses the node.
- TCP connections/s: connect, 1-byte echo, close (RST) in a loop: each connection is a
  new flow, so each one is a full rule decision for netpol.

Configurations, each alone on the node namespace:
- none: no program, no iptables rule.
- netpol: the real datapath (LPM trie + connection tracking) on both tc hooks of both
  host-side veths.
- iptables: the same rules in FORWARD, one per CIDR, then DROP; no conntrack, so every
  packet walks the chain (as in the XDP paper's comparison).
- iptables+ct: the same, behind an ESTABLISHED,RELATED accept: only a flow's first
  packet walks the chain (the most favourable iptables set-up, but conntrack itself
  then runs on every packet).

Plus the program's own cost per packet from BPF_PROG_TEST_RUN (no stack around it).
Figures are printed, never asserted; this machine has 2 CPUs shared by sender,
receiver and the forwarding path (and with whatever else runs), so read the ratios, not
the absolute numbers: each round measures every configuration back to back, each ratio
is taken within a round, and the medians over the rounds are printed with their range.
``BENCH_SIZES`` (default 10000) picks the rule counts, e.g. ``10,1000,10000``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from _fleet import signed_catalog

from bpfleet_agent import datapath, lab, libbpf, loading, mounts, pins, probing
from bpfleet_core import signing
from bpfleet_core.netpol.rules import (
    DirectionRules,
    EndpointRules,
    PeerBlock,
    PortRange,
    Prefix,
    Rule,
)

CLIENT, SERVER = "bench/client", "bench/server"
ADDRESSES = {
    CLIENT: ipaddress.IPv4Address("10.88.0.1"),
    SERVER: ipaddress.IPv4Address("10.88.0.2"),
}
PORT = 5201
SIZES = tuple(int(size) for size in os.environ.get("BENCH_SIZES", "10000").split(","))
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.0"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
CONFIGS = ("netpol", "iptables", "iptables+ct")

_UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
payload, sent, end = b"x" * 64, 0, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    for _ in range(512):
        try:
            s.send(payload)
        except OSError:
            pass
    sent += 512
print(sent)
"""
_TCP_CLIENT = """
import socket, struct, sys, time
address, done, end = (sys.argv[1], int(sys.argv[2])), 0, time.monotonic() + float(sys.argv[3])
linger = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT piles up between runs
while time.monotonic() < end:
    c = socket.create_connection(address, timeout=2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.send(b"x")
    c.recv(1)
    c.close()
    done += 1
print(done)
"""
_TCP_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(1)
        c.send(b"y")
    except OSError:
        pass
    c.close()
"""


def in_netns(netns: str, *command: str) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{netns}", *command]


def cidr_rules(count: int, protocol: str, shift: int = 0) -> EndpointRules:
    """The server accepts ``count`` source /32s on PORT; the client's is the last one.
    ``shift`` moves the others (another list of the same size)."""
    allowed = (PortRange(protocol, PORT, PORT),)  # type: ignore[arg-type]
    rules = [
        Rule(
            "bench/cidrs",
            index,
            (PeerBlock(Prefix.of(ipaddress.IPv4Address((100 << 24 | 64 << 16) + index + shift))),),
            allowed,
        )
        for index in range(count - 1)
    ]
    rules.append(
        Rule("bench/cidrs", count - 1, (PeerBlock(Prefix.of(ADDRESSES[CLIENT])),), allowed)
    )
    ingress = DirectionRules(True, tuple(rules), ("bench/cidrs",))
    return EndpointRules(SERVER, ADDRESSES[SERVER], ingress=ingress)


def iptables_restore_input(rules: EndpointRules, server_if: str, stateful: bool) -> str:
    """The same allow list as iptables rules, in one chain jumped to for the server."""
    lines = [
        "*filter",
        ":FORWARD ACCEPT [0:0]",
        ":NETPOL - [0:0]",
        f"-A FORWARD -o {server_if} -j NETPOL",
    ]
    if stateful:
        lines.append("-A NETPOL -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    for rule in rules.ingress.rules:
        for block in rule.peers or ():
            for ports in rule.ports:
                protocol = (ports.protocol or "all").lower()
                lines.append(
                    f"-A NETPOL -s {block.cidr} -p {protocol} --dport {ports.first} -j ACCEPT"
                )
    lines += ["-A NETPOL -j DROP", "COMMIT", ""]
    return "\n".join(lines)


def iptables_restore(netns: str, text: str) -> float:
    started = time.perf_counter()
    subprocess.run(in_netns(netns, "iptables-restore"), input=text, text=True, check=True)
    return time.perf_counter() - started


def iptables_clear(netns: str) -> None:
    iptables_restore(netns, "*filter\n:FORWARD ACCEPT [0:0]\n-F FORWARD\n-X\nCOMMIT\n")


def rx_packets(netns: str, interface: str) -> int:
    shown = subprocess.run(
        ["ip", "-n", netns, "-s", "-j", "link", "show", interface],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(json.loads(shown.stdout)[0]["stats64"]["rx"]["packets"])


def udp_packets_per_second(topology: lab.Topology) -> tuple[float, float]:
    """(delivered/s, sent/s) of one flat-out UDP flow."""
    server = topology.pods[SERVER]
    before = rx_packets(server.netns, "eth0")
    sender = [sys.executable, "-c", _UDP_SENDER, str(server.address), str(PORT), str(SECONDS)]
    sent = subprocess.run(
        in_netns(topology.pods[CLIENT].netns, *sender), capture_output=True, text=True, check=True
    )
    delivered = rx_packets(server.netns, "eth0") - before
    return delivered / SECONDS, int(sent.stdout) / SECONDS


def tcp_connections_per_second(topology: lab.Topology) -> float:
    server = topology.pods[SERVER]
    client = [sys.executable, "-c", _TCP_CLIENT, str(server.address), str(PORT), str(SECONDS)]
    done = subprocess.run(
        in_netns(topology.pods[CLIENT].netns, *client),
        capture_output=True, text=True, check=False, timeout=SECONDS + 30,
    )  # fmt: skip
    return int(done.stdout or 0) / SECONDS


@contextlib.contextmanager
def udp_sink(topology: lab.Topology) -> Iterator[None]:
    """A bound socket that never reads: datagrams are delivered (and dropped on a full
    buffer) without ICMP port-unreachable replies crossing back."""
    server = topology.pods[SERVER]
    with lab.entered(server.netns):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind((str(server.address), PORT))
    try:
        yield
    finally:
        sink.close()


@contextlib.contextmanager
def tcp_server(topology: lab.Topology) -> Iterator[None]:
    server = topology.pods[SERVER]
    process = subprocess.Popen(
        in_netns(server.netns, sys.executable, "-c", _TCP_SERVER, str(server.address), str(PORT)),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        process.kill()
        process.wait()


def udp_frame(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    """An Ethernet + IPv4 + UDP frame for BPF_PROG_TEST_RUN."""
    payload = b"x" * 18
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def program_costs(path: datapath.PolicyDatapath) -> tuple[int, int]:
    """(tracked packet, full decision) in ns per run of pod_egress, from the kernel."""
    program = pins.for_program(path.kernel.pin_root, path.desired.name).program(
        path.desired.tag, "pod_egress"
    )
    fd = libbpf.get_pinned(program)
    client, server = str(ADDRESSES[CLIENT]), str(ADDRESSES[SERVER])
    try:
        libbpf.prog_test_run(fd, udp_frame(client, server, 40000, PORT))  # tracked from now on
        tracked = libbpf.prog_test_run(fd, udp_frame(client, server, 40000, PORT), repeat=200_000)
        # Another port: all four lookups run, the port misses, nothing is tracked.
        decided = libbpf.prog_test_run(
            fd, udp_frame(client, server, 40001, PORT + 1), repeat=200_000
        )
    finally:
        os.close(fd)
    return tracked.nanoseconds_per_run, decided.nanoseconds_per_run


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("policy_throughput needs root (namespaces, eBPF, iptables)")
    lab.clean_stale()
    with signed_catalog() as (artifacts, trust_dir):
        pin_root = Path("/sys/fs/bpf") / f"bpfleet-lab-{os.getpid()}-bench"
        mounts.ensure_bpffs(pin_root)
        kernel = loading.Kernel(pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
        report = probing.probe("bench", pin_root, kernel.tracefs, kernel.cgroup_root)
        topology = lab.Topology(ADDRESSES)
        try:
            topology.build()
            interfaces = [pod.host_interface for pod in topology.pods.values()]
            desired = datapath.prepare(
                interfaces,
                artifact_dirs=[artifacts],
                trust=signing.TrustStore.from_paths([trust_dir]),
                report=report,
            )
            detached = datapath.hooks_for(desired, [])
            path = datapath.PolicyDatapath(kernel, detached)
            path.start([])
            run(topology, path, desired, detached)
            path.close()
        finally:
            topology.close()
            loading.remove(kernel, datapath.PROGRAM_NAME)
            with contextlib.suppress(OSError):
                pin_root.rmdir()


def run(
    topology: lab.Topology,
    path: datapath.PolicyDatapath,
    attached: loading.Desired,
    detached: loading.Desired,
) -> None:
    node, server_if = topology.node_netns, topology.pods[SERVER].host_interface
    # (kind, config, size) -> the rate of each round
    rates: dict[tuple[str, str, int], list[float]] = {}

    def configure(config: str, rules: EndpointRules) -> None:
        """Exactly one of: nothing, the datapath, iptables (with or without conntrack)."""
        with lab.entered(node):
            path.attach(attached if config == "netpol" else detached)
        iptables_clear(node)
        if config.startswith("iptables"):
            stateful = config.endswith("ct")
            iptables_restore(node, iptables_restore_input(rules, server_if, stateful))

    def measure(kind: str) -> float:
        if kind == "udp":
            with udp_sink(topology):
                return udp_packets_per_second(topology)[0]
        with tcp_server(topology):
            return tcp_connections_per_second(topology)

    print(
        f"== {ROUNDS} rounds x {SECONDS:g} s per configuration, interleaved (load "
        f"{os.getloadavg()[0]:.1f})"
    )
    for kind, protocol in (("udp", "UDP"), ("tcp", "TCP")):
        unit = "pkt/s delivered" if kind == "udp" else "conn/s"
        for size in SIZES:
            rules = cidr_rules(size, protocol)
            applied = path.apply([rules])
            for _ in range(ROUNDS):
                for config in ("none", *CONFIGS):
                    configure(config, rules)
                    path.flush_flows()
                    rates.setdefault((kind, config, size), []).append(measure(kind))
            for config in ("none", *CONFIGS):
                rate = statistics.median(rates[(kind, config, size)])
                print(f"  {kind} {config:<12} {size:>6} rules: {rate:>10,.0f} {unit} (median)")
            if kind == "udp":
                tracked, decided = program_costs(path)
                print(
                    f"  netpol program alone: {tracked} ns per tracked packet, {decided} ns "
                    f"per new-flow decision ({applied.entries:,} trie entries)"
                )
    configure("none", cidr_rules(1, "UDP"))
    print("== netpol relative to no policy and to iptables with the same rules")
    print("   (median of the rounds' ratios [lowest - highest])")
    for kind in ("udp", "tcp"):
        for size in SIZES:
            ours = rates[(kind, "netpol", size)]
            cells = []
            for other in ("none", *CONFIGS[1:]):
                ratios = [
                    a / max(b, 1.0) for a, b in zip(ours, rates[(kind, other, size)], strict=True)
                ]
                median = statistics.median(ratios)
                shown = f"{median:6.1%}" if other == "none" else f"{median:6.2f}x"
                low, high = min(ratios), max(ratios)
                spread = f"{low:.0%}-{high:.0%}" if other == "none" else f"{low:.1f}-{high:.1f}"
                cells.append(f"{shown} [{spread}] of {'no policy' if other == 'none' else other}")
            print(f"  {kind} {size:>6} rules: " + ", ".join(cells))
    print(f"   (load at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
