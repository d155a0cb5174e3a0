"""The real ``netpol`` program deciding real TCP and UDP between network namespaces:
rules, counters per rule and per policy, and rule sets swapped atomically under traffic.
(How rules become trie entries is ``test_rulesets``.)"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from bpfleet_agent import datapath, rulesets
from bpfleet_core.netpol.rules import (
    DirectionRules,
    EndpointRules,
    PeerBlock,
    PortRange,
    Prefix,
    Rule,
)
from tests.conftest import SignedCatalog
from tests.nodeagent.test_rulesets import lpm

# --------------------------------------------------------------------- real: the kernel

LAB_PORTS = (80, 81, 82, 83)
PROBE_TIMEOUT = 1.0
A, B, C = "t/a", "t/b", "t/c"
ADDRESSES = {A: "10.77.1.1", B: "10.77.1.2", C: "10.77.2.3"}


def host(pod: str) -> PeerBlock:
    return PeerBlock(Prefix.of(ipaddress.IPv4Address(ADDRESSES[pod])))


def tcp(first: int, last: int | None = None) -> PortRange:
    return PortRange("TCP", first, first if last is None else last)


def udp(port: int) -> PortRange:
    return PortRange("UDP", port, port)


def allow(index: int, peers: Sequence[PeerBlock] | None, *ports: PortRange) -> Rule:
    return Rule(
        "t/test-policy", index, None if peers is None else tuple(peers), ports or (PortRange(None),)
    )


def isolated(*rules: Rule) -> DirectionRules:
    return DirectionRules(True, rules, ("t/test-policy",))


def endpoint(pod: str, **directions: DirectionRules) -> EndpointRules:
    return EndpointRules(pod, ipaddress.IPv4Address(ADDRESSES[pod]), **directions)


@pytest.fixture(scope="module")
def policy_lab(signed_catalog: SignedCatalog, feature_report: Any) -> Iterator[Any]:
    """Three pods behind a node namespace, TCP and UDP servers on 80-83, netpol attached."""
    from bpfleet_agent import lab
    from bpfleet_core import signing

    source = lab.ArtifactSource(
        [signed_catalog.directory],
        signing.TrustStore.from_paths([signed_catalog.trust]),
        feature_report,
    )
    pods = {pod: ipaddress.IPv4Address(address) for pod, address in ADDRESSES.items()}
    with lab.PolicyLab(pods, source, ports=LAB_PORTS) as running:
        yield running


def probe(policy_lab: Any, protocol: str, port: int) -> set[tuple[str, str]]:
    """The (client, server) pairs that got through."""
    matrix = policy_lab.probe(protocol, port, PROBE_TIMEOUT)
    return {(c, s) for c, row in matrix.items() for s, ok in row.items() if ok and c != s}


EVERY_PAIR = {(c, s) for c in ADDRESSES for s in ADDRESSES if c != s}


@pytest.mark.bpf
def test_without_policies_everything_passes(policy_lab: Any) -> None:
    policy_lab.enforce([endpoint(A), endpoint(B), endpoint(C)])
    assert probe(policy_lab, "TCP", 80) == EVERY_PAIR
    policy_lab.enforce([])
    assert probe(policy_lab, "UDP", 81) == EVERY_PAIR


@pytest.mark.bpf
def test_tcp_and_udp_follow_the_rules(policy_lab: Any) -> None:
    # b accepts a on TCP 80 and c on UDP 81; nothing else. a and c are not isolated.
    policy_lab.enforce(
        [
            endpoint(A),
            endpoint(
                B, ingress=isolated(allow(0, [host(A)], tcp(80)), allow(1, [host(C)], udp(81)))
            ),
            endpoint(C),
        ]
    )
    others = EVERY_PAIR - {(A, B), (C, B)}
    assert probe(policy_lab, "TCP", 80) == others | {(A, B)}
    assert probe(policy_lab, "TCP", 81) == others
    assert probe(policy_lab, "UDP", 81) == others | {(C, B)}
    assert probe(policy_lab, "UDP", 80) == others


@pytest.mark.bpf
def test_replies_pass_but_new_flows_the_other_way_do_not(policy_lab: Any) -> None:
    # a may open connections to b only, and accepts none: replies still reach it.
    policy_lab.enforce(
        [
            endpoint(A, ingress=isolated(), egress=isolated(allow(0, [host(B)]))),
            endpoint(B),
            endpoint(C),
        ]
    )
    expected = {(A, B), (B, C), (C, B)}
    assert probe(policy_lab, "TCP", 80) == expected
    assert probe(policy_lab, "UDP", 80) == expected
    enforced = policy_lab.datapath.enforced()
    assert enforced.verdicts["tracked"][0] > 0
    assert enforced.verdicts["denied_ingress"][0] > 0
    assert enforced.verdicts["denied_egress"][0] > 0


@pytest.mark.bpf
def test_except_blocks_and_port_ranges(policy_lab: Any) -> None:
    block = PeerBlock(Prefix.parse("10.77.0.0/16"), (Prefix.parse("10.77.1.1/32"),))
    policy_lab.enforce(
        [endpoint(A), endpoint(B, ingress=isolated(allow(0, [block], tcp(81, 90)))), endpoint(C)]
    )
    others = EVERY_PAIR - {(A, B), (C, B)}
    assert probe(policy_lab, "TCP", 81) == others | {(C, B)}  # a is the except
    assert probe(policy_lab, "TCP", 80) == others  # below the range
    assert probe(policy_lab, "UDP", 81) == others  # wrong protocol


@pytest.mark.bpf
def test_audit_mode_drops_nothing_and_counts_what_it_would(policy_lab: Any) -> None:
    before = policy_lab.datapath.enforced()
    # Enforced: nothing isolated. Audited: b would accept nothing.
    policy_lab.enforce([endpoint(A), endpoint(B, audit_ingress=isolated()), endpoint(C)])
    assert probe(policy_lab, "TCP", 80) == EVERY_PAIR
    after = policy_lab.datapath.enforced()
    assert after.audit_denied - before.audit_denied == 2  # a->b and c->b, once each
    assert after.denied == before.denied


@pytest.mark.bpf
def test_counters_and_rules_survive_swaps_and_restarts(policy_lab: Any) -> None:
    from bpfleet_agent import lab as lab_module

    rules = [endpoint(A), endpoint(B, ingress=isolated(allow(0, [host(A)], tcp(80)))), endpoint(C)]
    applied = policy_lab.enforce(rules)
    assert probe(policy_lab, "TCP", 80) >= {(A, B)}
    counted = policy_lab.datapath.enforced()
    flows = policy_lab.datapath.counters()["t/test-policy"].flows[("ingress", 0)]
    assert counted.revision == applied.revision
    assert flows >= 1
    policy_lab.enforce(rules)  # the same rules again: the counts go on
    swapped = policy_lab.datapath.enforced()
    assert swapped.revision == applied.revision + 1
    assert swapped.allowed >= counted.allowed
    assert policy_lab.datapath.counters()["t/test-policy"].flows[("ingress", 0)] >= flows
    # A restarted agent adopts the pinned program, its links and its rule set.
    restarted = datapath.PolicyDatapath(policy_lab.datapath.kernel, policy_lab.datapath.desired)
    with lab_module.entered(policy_lab.topology.node_netns):
        assert restarted.start() is None  # nothing re-applied
    try:
        assert restarted.enforced_revision() == swapped.revision
        assert probe(policy_lab, "TCP", 80) == EVERY_PAIR - {(C, B)}
        # Its first change writes both slots whole (it cannot know what they hold).
        again = restarted.apply(rules)
        assert again.rebuilt
        assert restarted.apply(rules).written == 1  # the meta entry (revision) alone
    finally:
        restarted.close()
    # The lab's datapath sees its slots were replaced meanwhile, and writes them whole.
    assert policy_lab.enforce(rules).rebuilt


# Atomicity. Policy OLD lets a reach b:80 and c reach b:81; NEW lets c reach b:82. In
# a trie built afresh (after a restart, or a change too big to write in place) port
# groups are numbered from 0 again, so a's OLD peer entry and NEW's group entries (or
# the reverse) would let a reach b:82 or c reach b:80, which neither policy allows. 83
# is never allowed.
OLD = [
    endpoint(A),
    endpoint(B, ingress=isolated(allow(0, [host(A)], udp(80)), allow(1, [host(C)], udp(81)))),
    endpoint(C),
]
NEW = [endpoint(A), endpoint(B, ingress=isolated(allow(0, [host(C)], udp(82)))), endpoint(C)]
PERMITTED = {(A, 80), (C, 81), (C, 82)}


def test_the_atomicity_test_would_see_a_mixed_rule_set() -> None:
    """The premise above, checked: mixing OLD's peers with NEW's ports admits a forbidden flow."""
    old, new = (rulesets.compile_rule_set(rules, 1) for rules in (OLD, NEW))
    b = rulesets.VALUE.unpack(old[rulesets.endpoint_key(ipaddress.IPv4Address(ADDRESSES[B]))])[0]
    a_peer = rulesets.peer_key(
        rulesets.Scope(b, 0, 0), Prefix.of(ipaddress.IPv4Address(ADDRESSES[A])).value, 128
    )
    a_group = rulesets.VALUE.unpack(lpm(old, a_peer) or b"")[0]
    assert lpm(new, rulesets.group_key(a_group, 17, 82, 16)) is not None  # a -> b:82 !


def _udp_exchanges(
    policy_lab: Any, stop: threading.Event, seen: set[tuple[str, int]], counts: dict[str, int]
) -> None:
    """Fresh sockets (so every datagram is a new flow) from a and c to b:80-83; record
    which (client, port) got an echo back."""
    from bpfleet_agent import lab as lab_module

    server = ADDRESSES[B]
    while not stop.is_set():
        selector = selectors.DefaultSelector()
        opened: list[socket.socket] = []
        try:
            for client in (A, C):
                with lab_module.entered(policy_lab.pods[client].netns):
                    for port in LAB_PORTS:
                        for _ in range(4):
                            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            sock.setblocking(False)
                            opened.append(sock)
                            sock.connect((server, port))
                            with contextlib.suppress(OSError):
                                sock.send(b"atomic")
                            selector.register(sock, selectors.EVENT_READ, (client, port))
                            counts["sent"] += 1
            deadline = time.monotonic() + 0.05
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(timeout=left):
                    with contextlib.suppress(OSError):
                        if key.fileobj.recv(64):  # type: ignore[union-attr]
                            seen.add(key.data)
                            counts["echoed"] += 1
                    selector.unregister(key.fileobj)
        finally:
            selector.close()
            for sock in opened:
                sock.close()


@pytest.mark.bpf
def test_swaps_under_traffic_never_let_through_what_neither_policy_allows(policy_lab: Any) -> None:
    policy_lab.enforce(OLD)
    stop = threading.Event()
    seen: set[tuple[str, int]] = set()
    counts = {"sent": 0, "echoed": 0}
    sender = threading.Thread(target=_udp_exchanges, args=(policy_lab, stop, seen, counts))
    sender.start()
    swaps = 0
    try:
        # At least 3 s and 100 swaps (a loaded machine swaps slower), at most 60 s.
        until, give_up = time.monotonic() + 3.0, time.monotonic() + 60.0
        while (time.monotonic() < until or swaps < 100) and time.monotonic() < give_up:
            if swaps % 3 == 0:
                policy_lab.datapath.reset()  # fresh numbering, tries filled whole
            policy_lab.datapath.apply(NEW if swaps % 2 == 0 else OLD)
            swaps += 1
    finally:
        stop.set()
        sender.join(timeout=10)
    assert swaps >= 100, "the swaps must race the traffic"
    assert counts["sent"] > 500
    assert counts["echoed"] > 100
    assert seen <= PERMITTED, f"let through what neither policy allows: {seen - PERMITTED}"
    assert seen == PERMITTED, "each policy must have been seen in force"


# -------------------------------------------------------------- counters per rule


def _lab_topology() -> Any:
    from bpfleet_core.netpol import models

    return models.Topology.model_validate(
        {
            "namespaces": {"t": {}},
            "pods": {
                pod: {"ip": address, "labels": {"pod": pod.partition("/")[2]}}
                for pod, address in ADDRESSES.items()
            },
        }
    )


def _three_rules(name: str, mode: str) -> Any:
    from bpfleet_core.netpol import validating

    return validating.validate(
        {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "t", "name": name},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "mode": mode,
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                        "ports": [{"port": 80}],
                    },
                    {
                        "from": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
                        "ports": [{"port": 81}],
                    },
                    {
                        "from": [{"ipBlock": {"cidr": "10.77.0.0/16"}}],
                        "ports": [{"port": 82, "protocol": "UDP"}],
                    },
                ],
            },
        }
    ).policy


def _exchange(policy_lab: Any, client: str, protocol: str, port: int) -> bool:
    """One fresh flow from ``client`` to b (a new socket: a new flow); echoed or not."""
    from bpfleet_agent import lab as lab_module

    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    with lab_module.entered(policy_lab.pods[client].netns):
        sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(0.8)
    try:
        sock.connect((ADDRESSES[B], port))
        sock.send(b"counted")
        return sock.recv(64) == b"counted"
    except OSError:
        return False
    finally:
        sock.close()


# (client, protocol, port, times, allowed when enforced)
TRAFFIC = [
    (A, "TCP", 80, 3, True),  # rule 0
    (C, "TCP", 81, 2, True),  # rule 1
    (A, "UDP", 82, 4, True),  # rule 2
    (C, "UDP", 82, 1, True),  # rule 2
    (A, "TCP", 81, 2, False),  # no rule: denied (audit: would be)
]


@pytest.mark.bpf
@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_each_rule_counts_the_flows_it_let_in(policy_lab: Any, mode: str) -> None:
    from bpfleet_core.netpol import compiling

    name = f"three-{mode}"
    policy = f"t/{name}"
    policy_lab.enforce(compiling.compile_policies([_three_rules(name, mode)], _lab_topology()))
    before = policy_lab.datapath.counters().get(policy)
    assert before is None, "a policy new to the datapath has counted nothing"
    for client, protocol, port, times, allowed in TRAFFIC:
        for _ in range(times):
            got_through = _exchange(policy_lab, client, protocol, port)
            assert got_through == (allowed or mode == "audit"), (client, protocol, port)
    counted = policy_lab.datapath.counters()[policy]
    assert counted.flows == {("ingress", 0): 3, ("ingress", 1): 2, ("ingress", 2): 5}
    if mode == "enforce":
        assert counted.denied >= 2  # packets: a refused SYN may be sent again
        assert counted.audit_denied == 0
    else:
        assert counted.denied == 0
        assert counted.audit_denied == 2  # flows, each counted once


# ------------------------------------------- replacing 10,000 rules under traffic

SWAP_PORT = 84


def _ten_thousand(shift: int, client: PeerBlock, client_first: bool) -> list[EndpointRules]:
    """b accepts 10,000 source blocks on SWAP_PORT, ``client`` (holding a) first or last."""
    others = [
        PeerBlock(Prefix.of(ipaddress.IPv4Address((100 << 24 | 64 << 16) + index + shift)))
        for index in range(9_999)
    ]
    blocks = [client, *others] if client_first else [*others, client]
    rules = tuple(
        Rule("t/allow-list", index, (block,), (tcp(SWAP_PORT), udp(SWAP_PORT)))
        for index, block in enumerate(blocks)
    )
    return [endpoint(A), endpoint(B, ingress=isolated(*rules)), endpoint(C)]


class _EchoServers:
    """A TCP echo that keeps its connections (an established flow) and a UDP echo, in b."""

    def __init__(self, policy_lab: Any) -> None:
        from bpfleet_agent import lab as lab_module

        with lab_module.entered(policy_lab.pods[B].netns):
            self.listener = socket.create_server((ADDRESSES[B], SWAP_PORT))
            self.datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.datagrams.bind((ADDRESSES[B], SWAP_PORT))
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._datagrams, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._stream, args=(connection,), daemon=True).start()

    def _stream(self, connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data)

    def _datagrams(self) -> None:
        self.datagrams.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, peer = self.datagrams.recvfrom(4096)
            except TimeoutError:
                continue
            self.datagrams.sendto(data, peer)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()
        self.datagrams.close()


def _established_traffic(
    policy_lab: Any, stop: threading.Event, counts: dict[str, int], problems: list[str]
) -> None:
    """From a: one TCP connection and one UDP socket kept for the whole run, each message
    waiting for its echo, plus a new TCP connection now and then."""
    from bpfleet_agent import lab as lab_module

    with lab_module.entered(policy_lab.pods[A].netns):
        stream = socket.create_connection((ADDRESSES[B], SWAP_PORT), timeout=2)
        datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.settimeout(2)
    datagrams.connect((ADDRESSES[B], SWAP_PORT))
    try:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            message = f"{sequence:08d}".encode()
            try:
                stream.sendall(message)
                echoed = b""
                while len(echoed) < len(message):
                    echoed += stream.recv(len(message) - len(echoed)) or b"x" * 99
                if echoed != message:
                    problems.append(f"tcp message {sequence} came back as {echoed!r}")
                datagrams.send(message)
                if datagrams.recv(64) != message:
                    problems.append(f"udp message {sequence} came back wrong")
            except OSError as error:
                problems.append(f"message {sequence}: {error!r}")
                return
            counts["messages"] += 1
            if sequence % 20 == 0:
                if _exchange(policy_lab, A, "TCP", SWAP_PORT):
                    counts["connections"] += 1
                else:
                    problems.append(f"a new connection (after message {sequence}) failed")
    finally:
        stream.close()
        datagrams.close()


@pytest.mark.bpf
def test_replacing_ten_thousand_rules_under_traffic_drops_no_allowed_packet(
    policy_lab: Any,
) -> None:
    """Every rule set allows a -> b; while they replace each other, a's established TCP
    connection and UDP flow lose nothing, and new connections from a all get through.
    The sets: A (a's /32 last), A with five rules changed (written in place into the idle
    slot), and B (10,000 other rules, a allowed by a /24 first: a trie filled whole)."""
    whole = _ten_thousand(0, host(A), client_first=False)
    ingress = whole[1].ingress
    changed = list(ingress.rules)
    for index in range(100, 105):
        moved = Prefix.of(ipaddress.IPv4Address((100 << 24 | 65 << 16) + index))
        changed[index] = changed[index]._replace(peers=(PeerBlock(moved),))
    small = [endpoint(A), endpoint(B, ingress=isolated(*changed)), endpoint(C)]
    wide = PeerBlock(Prefix.parse("10.77.1.0/24"))
    sets = [whole, small, _ten_thousand(20_000, wide, client_first=True)]
    policy_lab.enforce(sets[0])
    servers = _EchoServers(policy_lab)
    stop = threading.Event()
    counts = {"messages": 0, "connections": 0}
    problems: list[str] = []
    sender = threading.Thread(
        target=_established_traffic, args=(policy_lab, stop, counts, problems)
    )
    before = policy_lab.datapath.enforced()
    sender.start()
    swaps = rebuilt = in_place = 0
    try:
        until = time.monotonic() + 4.0
        while time.monotonic() < until or swaps < 9:
            applied = policy_lab.datapath.apply(sets[(swaps + 1) % 3])
            assert applied.entries > 10_000
            rebuilt += applied.rebuilt
            in_place += not applied.rebuilt
            swaps += 1
    finally:
        stop.set()
        sender.join(timeout=30)
        servers.close()
    after = policy_lab.datapath.enforced()
    assert not problems, problems
    assert swaps >= 9
    assert rebuilt >= 3, "tries filled whole"
    assert in_place >= 3, "changes written in place into the idle slot"
    assert counts["messages"] > 100, "the traffic must race the swaps"
    assert counts["connections"] >= 3
    assert after.denied == before.denied, "nothing of a -> b was dropped"
