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
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            if swaps % 3 == 0:
                policy_lab.datapath.reset()  # fresh numbering, tries filled whole
            policy_lab.datapath.apply(NEW if swaps % 2 == 0 else OLD)
            swaps += 1
    finally:
        stop.set()
        sender.join(timeout=10)
    assert swaps > 100, "the swaps must race the traffic"
    assert counts["sent"] > 500
    assert counts["echoed"] > 100
    assert seen <= PERMITTED, f"let through what neither policy allows: {seen - PERMITTED}"
    assert seen == PERMITTED, "each policy must have been seen in force"
