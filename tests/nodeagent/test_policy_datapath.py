"""The policy datapath: compiled rules -> LPM trie entries (pure), and the real ``netpol``
program deciding real TCP and UDP between network namespaces, swapped atomically."""

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfleet_agent import datapath
from bpfleet_core.netpol import compiling
from bpfleet_core.netpol.rules import DirectionRules, EndpointRules, PeerBlock, PortRange, Rule
from tests.conftest import SignedCatalog

# ------------------------------------------------------------------ pure: building blocks


def test_port_ranges_become_aligned_prefixes() -> None:
    assert datapath.port_range_prefixes(80, 80) == [(80, 16)]
    assert datapath.port_range_prefixes(80, 90) == [(80, 13), (88, 15), (90, 16)]
    assert datapath.port_range_prefixes(0, 65535) == [(0, 0)]
    assert len(datapath.port_range_prefixes(1, 65534)) == 30  # the worst case: 2 * 15
    with pytest.raises(ValueError, match="not a port range"):
        datapath.port_range_prefixes(90, 80)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_prefixes_cover_the_range_exactly(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    covered: list[int] = []
    for start, bits in datapath.port_range_prefixes(first, last):
        size = 1 << (16 - bits)
        assert start % size == 0, "a prefix must be aligned"
        covered.extend(range(start, start + size))
    assert covered == list(range(first, last + 1))


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def _rule(index: int, peers: Sequence[PeerBlock] | None, *ports: PortRange) -> Rule:
    return Rule("ns/policy", index, None if peers is None else tuple(peers), tuple(ports))


def test_an_except_is_a_more_specific_prefix_without_the_rule() -> None:
    rules = [_rule(0, [PeerBlock(_net("10.1.0.0/16"), (_net("10.1.2.0/24"),))], PortRange("TCP"))]
    prefixes = datapath.peer_partition(rules)
    mapped = {
        (ipaddress.ip_address(p.value).ipv4_mapped, p.length - 96): p.rules  # type: ignore[union-attr]
        for p in prefixes
    }
    assert mapped == {
        (ipaddress.ip_address("10.1.0.0"), 16): frozenset({0}),
        (ipaddress.ip_address("10.1.2.0"), 24): frozenset(),
    }


def test_overlapping_blocks_make_classes_of_rule_sets() -> None:
    rules = [
        _rule(0, [PeerBlock(_net("10.0.0.0/8"))], PortRange("TCP", 80, 80)),
        _rule(1, [PeerBlock(_net("10.1.0.0/16"))], PortRange("UDP", 53, 53)),
        _rule(2, None, PortRange("TCP", 443, 443)),
    ]
    by_length = {p.length: p.rules for p in datapath.peer_partition(rules)}
    assert by_length == {0: {2}, 104: {0, 2}, 112: {0, 1, 2}}


def _most_specific(prefixes: Sequence[datapath.PeerPrefix], bits: int) -> frozenset[int] | None:
    best: datapath.PeerPrefix | None = None
    for prefix in prefixes:
        shift = 128 - prefix.length
        if prefix.value >> shift == bits >> shift and (best is None or prefix.length > best.length):
            best = prefix
    return None if best is None else best.rules


_SMALL_NETWORKS = st.builds(
    lambda host, length: ipaddress.ip_network(f"10.9.0.{host}/{length}", strict=False),
    st.integers(0, 15),
    st.integers(27, 32),
)
_BLOCKS = st.builds(
    lambda cidr, holes: PeerBlock(cidr, tuple(h for h in holes if h.subnet_of(cidr) and h != cidr)),
    _SMALL_NETWORKS,
    st.lists(_SMALL_NETWORKS, max_size=3),
)


# CIDR lists without excepts, mostly disjoint: the partition's fast path (and, when two
# happen to nest, the general walk).
_PLAIN_BLOCKS = st.builds(PeerBlock, _SMALL_NETWORKS)


@given(
    st.one_of(
        st.lists(st.one_of(st.none(), st.lists(_BLOCKS, max_size=3)), min_size=1, max_size=4),
        st.lists(st.lists(_PLAIN_BLOCKS, min_size=1, max_size=4), min_size=1, max_size=6),
    )
)
def test_the_most_specific_prefix_names_exactly_the_matching_rules(
    peer_lists: list[list[PeerBlock] | None],
) -> None:
    rules = [_rule(i, peers, PortRange(None)) for i, peers in enumerate(peer_lists)]
    prefixes = datapath.peer_partition(rules)
    for host in range(32):
        address = ipaddress.IPv4Address(f"10.9.0.{host}")
        expected = frozenset(
            i
            for i, rule in enumerate(rules)
            if rule.peers is None
            or any(
                address in block.cidr and not any(address in h for h in block.excepts)
                for block in rule.peers
            )
        )
        found = _most_specific(prefixes, datapath.address_bits(address))
        assert (found or frozenset()) == expected, address


# ------------------------------------------- pure: the whole trie decides like the compiler


def _entries(compiled: datapath.CompiledRuleSet) -> dict[bytes, bytes]:
    return dict(zip(compiled.keys, compiled.values, strict=True))


def _lpm(entries: dict[bytes, bytes], key: bytes) -> bytes | None:
    """A longest-prefix match over packed keys, as the kernel's LPM trie does it."""
    wanted = int.from_bytes(key[4:], "big")
    best, best_length = None, -1
    for entry, value in entries.items():
        length = int.from_bytes(entry[:4], "little")
        shift = 192 - length
        if int.from_bytes(entry[4:], "big") >> shift == wanted >> shift and length > best_length:
            best, best_length = value, length
    return best


def _side_allows(
    entries: dict[bytes, bytes], endpoint: int, direction: int, view: int, peer: Any, port: int
) -> bool:
    scope = datapath.Scope(endpoint, direction, view)
    found = _lpm(entries, datapath.peer_key(scope, datapath.address_bits(peer), 128))
    if found is None:
        return False
    peer_class = int.from_bytes(found[:4], "little")
    if peer_class == datapath.NO_CLASS:
        return False
    return _lpm(entries, datapath.port_key(scope, peer_class, 6, port, 16)) is not None


def _trie_verdict(
    compiled: datapath.CompiledRuleSet, source: Any, destination: Any, port: int, view: str
) -> bool:
    """What netpol.bpf.c decides for a new TCP flow, run over the compiled entries."""
    entries = dict(zip(compiled.keys, compiled.values, strict=True))
    view_id = datapath.VIEWS["audit" if view == "audit" else "enforce"]
    for address, direction, peer in ((source, 1, destination), (destination, 0, source)):
        found = _lpm(entries, datapath.endpoint_key(address))
        if found is None:
            continue
        endpoint = int.from_bytes(found[:4], "little")
        flags = int.from_bytes(found[4:8], "little")
        isolated, audit_isolated, differs = (
            (
                datapath.EGRESS_ISOLATED,
                datapath.AUDIT_EGRESS_ISOLATED,
                datapath.AUDIT_EGRESS_DIFFERS,
            )
            if direction == 1
            else (
                datapath.INGRESS_ISOLATED,
                datapath.AUDIT_INGRESS_ISOLATED,
                datapath.AUDIT_INGRESS_DIFFERS,
            )
        )
        if view_id == 1 and flags & differs:
            if flags & audit_isolated and not _side_allows(
                entries, endpoint, direction, 1, peer, port
            ):
                return False
        elif flags & isolated and not _side_allows(entries, endpoint, direction, 0, peer, port):
            return False
    return True


_ENDPOINTS = [ipaddress.IPv4Address(f"10.9.0.{host}") for host in (1, 2, 5)]
_PORTS = st.builds(
    lambda protocol, first, width: (
        PortRange(protocol, first, first + width) if protocol else PortRange(None)
    ),
    st.sampled_from(["TCP", "TCP", "UDP", None]),
    st.integers(78, 84),
    st.integers(0, 3),
)
_RULES = st.lists(
    st.tuples(st.one_of(st.none(), st.lists(_BLOCKS, max_size=2)), st.lists(_PORTS, max_size=2)),
    max_size=3,
)
_DIRECTIONS = st.builds(
    lambda isolated, rules: (
        DirectionRules(
            isolated, tuple(_rule(i, peers, *ports) for i, (peers, ports) in enumerate(rules))
        )
        if isolated
        else DirectionRules()
    ),
    st.booleans(),
    _RULES,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_DIRECTIONS, _DIRECTIONS, _DIRECTIONS, _DIRECTIONS), min_size=3, max_size=3)
)
def test_the_compiled_trie_decides_every_flow_as_the_compiler_does(
    views: list[tuple[DirectionRules, DirectionRules, DirectionRules, DirectionRules]],
) -> None:
    endpoints = {
        f"ns/p{i}": EndpointRules(f"ns/p{i}", address, ingress, egress, audit_in, audit_out)
        for i, (address, (ingress, egress, audit_in, audit_out)) in enumerate(
            zip(_ENDPOINTS, views, strict=True)
        )
    }
    compiled = datapath.compile_rule_set(endpoints.values(), revision=7)
    others = [ipaddress.IPv4Address(f"10.9.0.{host}") for host in (0, 9, 31)]
    for source in [*_ENDPOINTS, *others]:
        for destination in _ENDPOINTS:
            if source == destination:
                continue
            for port in (77, 80, 84, 87):
                for view in ("enforce", "audit"):
                    expected = compiling.verdict(
                        endpoints,
                        source,
                        destination,
                        "TCP",
                        port,
                        view=view,  # type: ignore[arg-type]
                    )
                    assert _trie_verdict(compiled, source, destination, port, view) == expected, (
                        source, destination, port, view,
                    )  # fmt: skip


def test_the_meta_entry_says_what_the_trie_holds() -> None:
    rules = _rule(0, [PeerBlock(_net("10.9.0.1/32"))], PortRange("TCP", 80, 80))
    endpoint = EndpointRules(
        "ns/a", ipaddress.IPv4Address("10.9.0.2"), DirectionRules(True, (rules,))
    )
    compiled = datapath.compile_rule_set([endpoint], revision=41)
    meta = dict(zip(compiled.keys, compiled.values, strict=True))[datapath.META_KEY]
    assert datapath._VALUE.unpack(meta) == (1, 1, 41)
    assert compiled.rules == {
        datapath.rule_key("ns/policy", "ingress", 0): datapath.RuleName("ns/policy", "ingress", 0)
    }
    with pytest.raises(ValueError, match="share the address"):
        datapath.compile_rule_set([endpoint, endpoint], revision=1)


# --------------------------------------------------------------------- real: the kernel

LAB_PORTS = (80, 81, 82, 83)
PROBE_TIMEOUT = 1.0
A, B, C = "t/a", "t/b", "t/c"
ADDRESSES = {A: "10.77.1.1", B: "10.77.1.2", C: "10.77.2.3"}


def host(pod: str) -> PeerBlock:
    return PeerBlock(ipaddress.ip_network(f"{ADDRESSES[pod]}/32"))


def tcp(first: int, last: int | None = None) -> PortRange:
    return PortRange("TCP", first, first if last is None else last)


def udp(port: int) -> PortRange:
    return PortRange("UDP", port, port)


def allow(index: int, peers: Sequence[PeerBlock] | None, *ports: PortRange) -> Rule:
    return Rule(
        "t/test-policy", index, None if peers is None else tuple(peers), ports or (PortRange(None),)
    )


def isolated(*rules: Rule) -> DirectionRules:
    return DirectionRules(True, rules)


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
    block = PeerBlock(ipaddress.ip_network("10.77.0.0/16"), (ipaddress.ip_network("10.77.1.1/32"),))
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
    assert counted.revision == applied.revision
    assert counted.rule_flows["t/test-policy ingress[0]"] >= 1
    policy_lab.enforce(rules)  # a new trie, same rules: the counts go on
    swapped = policy_lab.datapath.enforced()
    assert swapped.revision == applied.revision + 1
    assert swapped.allowed >= counted.allowed
    assert (
        swapped.rule_flows["t/test-policy ingress[0]"]
        >= counted.rule_flows["t/test-policy ingress[0]"]
    )
    # A restarted agent adopts the pinned program, its links and its rule set.
    restarted = datapath.PolicyDatapath(policy_lab.datapath.kernel, policy_lab.datapath.desired)
    with lab_module.entered(policy_lab.topology.node_netns):
        assert restarted.start() is None  # nothing re-applied
    try:
        assert restarted.enforced_revision() == swapped.revision
        assert probe(policy_lab, "TCP", 80) == EVERY_PAIR - {(C, B)}
    finally:
        restarted.close()


# Atomicity. Policy OLD lets a reach b:80 and c reach b:81; NEW lets c reach b:82. Peer
# classes are numbered by address, so a is class 0 in OLD and c is class 0 in NEW: a
# packet that took OLD's peer entries and NEW's port entries (or the reverse) would let
# a reach b:82 or c reach b:80, which neither policy allows. 83 is never allowed.
OLD = [
    endpoint(A),
    endpoint(B, ingress=isolated(allow(0, [host(A)], udp(80)), allow(1, [host(C)], udp(81)))),
    endpoint(C),
]
NEW = [endpoint(A), endpoint(B, ingress=isolated(allow(0, [host(C)], udp(82)))), endpoint(C)]
PERMITTED = {(A, 80), (C, 81), (C, 82)}


def test_the_atomicity_test_would_see_a_mixed_rule_set() -> None:
    """The premise above, checked: mixing OLD's peers with NEW's ports admits a forbidden flow."""
    old, new = (_entries(datapath.compile_rule_set(rules, 1)) for rules in (OLD, NEW))
    b = int.from_bytes(
        old[datapath.endpoint_key(ipaddress.IPv4Address(ADDRESSES[B]))][:4], "little"
    )
    scope = datapath.Scope(b, 0, 0)
    a_peer = datapath.peer_key(
        scope, datapath.address_bits(ipaddress.IPv4Address(ADDRESSES[A])), 128
    )
    a_class = int.from_bytes(_lpm(old, a_peer) or b"", "little")  # type: ignore[arg-type]
    assert _lpm(new, datapath.port_key(scope, a_class, 17, 82, 16)) is not None  # a -> b:82 !


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
