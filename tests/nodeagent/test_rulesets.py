"""Rule sets (pure): compiled rules -> LPM trie entries, built whole or as a change.

The trie is evaluated here as the kernel does it (longest prefix match over the packed
keys) and as ``netpol.bpf.c`` walks it, and must decide every flow as the compiler's
``verdict`` does; a rule set built as a change from the one before must decide exactly
as one built from scratch, and its change, applied to the entries before, must give
its entries.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfleet_agent import rulesets
from bpfleet_agent.rulesets import RuleSetBuilder, Scope
from bpfleet_core.netpol import compiling
from bpfleet_core.netpol.rules import (
    Address,
    DirectionRules,
    EndpointRules,
    PeerBlock,
    PortRange,
    Prefix,
    Rule,
    address_bits,
)

# ------------------------------------------------------------------ building blocks


def test_port_ranges_become_aligned_prefixes() -> None:
    assert rulesets.port_range_prefixes(80, 80) == [(80, 16)]
    assert rulesets.port_range_prefixes(80, 90) == [(80, 13), (88, 15), (90, 16)]
    assert rulesets.port_range_prefixes(0, 65535) == [(0, 0)]
    assert len(rulesets.port_range_prefixes(1, 65534)) == 30  # the worst case: 2 * 15
    with pytest.raises(ValueError, match="not a port range"):
        rulesets.port_range_prefixes(90, 80)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_prefixes_cover_the_range_exactly(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    covered: list[int] = []
    for start, bits in rulesets.port_range_prefixes(first, last):
        size = 1 << (16 - bits)
        assert start % size == 0, "a prefix must be aligned"
        covered.extend(range(start, start + size))
    assert covered == list(range(first, last + 1))


def net(text: str) -> Prefix:
    return Prefix.parse(text)


def test_prefixes_parse_cidrs_into_one_space() -> None:
    assert net("10.1.2.3/16") == Prefix((0xFFFF << 32) | 0x0A010000, 112)
    assert net("fd00::1/64") == Prefix(0xFD00 << 112, 64)
    assert str(net("10.1.0.0/16")) == "10.1.0.0/16"
    assert net("10.1.0.0/16").contains(ipaddress.IPv4Address("10.1.200.1"))
    assert not net("10.1.0.0/16").contains(ipaddress.IPv4Address("10.2.0.1"))
    assert Prefix.of(ipaddress.IPv4Address("10.0.0.1")) == net("10.0.0.1/32")
    for bad in ("10.0.0.1", "10.0.0.0/33", "10.0.0/8", "example.com/8", "fd00::/129", "1/x"):
        with pytest.raises(ValueError, match="not a CIDR"):
            net(bad)


def _rule(index: int, peers: Sequence[PeerBlock] | None, *ports: PortRange) -> Rule:
    return Rule("ns/policy", index, None if peers is None else tuple(peers), tuple(ports))


def test_an_except_is_a_more_specific_prefix_without_the_rule() -> None:
    rules = [_rule(0, [PeerBlock(net("10.1.0.0/16"), (net("10.1.2.0/24"),))], PortRange("TCP"))]
    prefixes = rulesets.peer_partition(rules)
    assert {(str(Prefix(p.value, p.length)), p.rules) for p in prefixes} == {
        ("10.1.0.0/16", frozenset({0})),
        ("10.1.2.0/24", frozenset()),
    }


def test_overlapping_blocks_make_classes_of_rule_sets() -> None:
    rules = [
        _rule(0, [PeerBlock(net("10.0.0.0/8"))], PortRange("TCP", 80, 80)),
        _rule(1, [PeerBlock(net("10.1.0.0/16"))], PortRange("UDP", 53, 53)),
        _rule(2, None, PortRange("TCP", 443, 443)),
    ]
    by_length = {p.length: p.rules for p in rulesets.peer_partition(rules)}
    assert by_length == {0: {2}, 104: {0, 2}, 112: {0, 1, 2}}


def _most_specific(prefixes: Sequence[rulesets.PeerPrefix], bits: int) -> frozenset[int] | None:
    best: rulesets.PeerPrefix | None = None
    for prefix in prefixes:
        shift = 128 - prefix.length
        if prefix.value >> shift == bits >> shift and (best is None or prefix.length > best.length):
            best = prefix
    return None if best is None else best.rules


_SMALL_NETWORKS = st.builds(
    lambda host, length: Prefix.of(ipaddress.ip_network(f"10.9.0.{host}/{length}", strict=False)),
    st.integers(0, 15),
    st.integers(27, 32),
)


def _holes(cidr: Prefix, holes: list[Prefix]) -> tuple[Prefix, ...]:
    inside = [
        hole
        for hole in holes
        if hole.length > cidr.length
        and cidr.value >> (128 - cidr.length) == hole.value >> (128 - cidr.length)
    ]
    return tuple(dict.fromkeys(inside))


_BLOCKS = st.builds(
    lambda cidr, holes: PeerBlock(cidr, _holes(cidr, holes)),
    _SMALL_NETWORKS,
    st.lists(_SMALL_NETWORKS, max_size=3),
)
# CIDR lists without excepts, mostly disjoint: the partition's fast path (and, when two
# happen to nest, the general walk).
_PLAIN_BLOCKS = _SMALL_NETWORKS.map(PeerBlock)


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
    prefixes = rulesets.peer_partition(rules)
    for host in range(32):
        address = ipaddress.IPv4Address(f"10.9.0.{host}")
        expected = frozenset(
            i
            for i, rule in enumerate(rules)
            if rule.peers is None or any(block.contains(address) for block in rule.peers)
        )
        found = _most_specific(prefixes, address_bits(address))
        assert (found or frozenset()) == expected, address


# ------------------------------------------------ the trie, evaluated as the kernel does


def lpm(entries: Mapping[bytes, bytes], key: bytes) -> bytes | None:
    """A longest-prefix match over packed keys, as the kernel's LPM trie does it."""
    wanted = int.from_bytes(key[4:], "big")
    best, best_length = None, -1
    for entry, value in entries.items():
        length = int.from_bytes(entry[:4], "little")
        shift = 192 - length
        if int.from_bytes(entry[4:], "big") >> shift == wanted >> shift and length > best_length:
            best, best_length = value, length
    return best


def side_allows(
    entries: Mapping[bytes, bytes],
    endpoint: int,
    direction: int,
    view: int,
    peer: Address,
    port: int,
    protocol: int = 6,
) -> int | None:
    """The rule key credited, as ``allows`` in netpol.bpf.c decides; None: denied."""
    scope = Scope(endpoint, direction, view)
    found = lpm(entries, rulesets.peer_key(scope, address_bits(peer), 128))
    if found is None:
        return None
    number, flags, credited = rulesets.VALUE.unpack(found)
    if number == rulesets.NO_CLASS:
        return None
    if flags & rulesets.PEER_GROUP:
        hit = lpm(entries, rulesets.group_key(number, protocol, port, 16))
        return None if hit is None else credited
    hit = lpm(entries, rulesets.port_key(scope, number, protocol, port, 16))
    return None if hit is None else rulesets.VALUE.unpack(hit)[2]


def trie_verdict(
    entries: Mapping[bytes, bytes], source: Address, destination: Address, port: int, view: str
) -> bool:
    """What netpol.bpf.c decides for a new TCP flow, run over the entries."""
    view_id = 1 if view == "audit" else 0
    for address, direction, peer in ((source, 1, destination), (destination, 0, source)):
        found = lpm(entries, rulesets.endpoint_key(address))
        if found is None:
            continue
        endpoint, flags, _ = rulesets.VALUE.unpack(found)
        isolated, audit_isolated, differs = rulesets._FLAGS[direction]
        if view_id == 1 and flags & differs:
            if (
                flags & audit_isolated
                and side_allows(entries, endpoint, direction, 1, peer, port) is None
            ):
                return False
        elif flags & isolated and side_allows(entries, endpoint, direction, 0, peer, port) is None:
            return False
    return True


_ENDPOINTS = [ipaddress.IPv4Address(f"10.9.0.{host}") for host in (1, 2, 5)]
_OTHERS = [ipaddress.IPv4Address(f"10.9.0.{host}") for host in (0, 9, 31)]
_PORTS = st.builds(
    lambda protocol, first, width: (
        PortRange(protocol, first, first + width) if protocol else PortRange(None)
    ),
    st.sampled_from(["TCP", "TCP", "UDP", None]),
    st.integers(78, 84),
    st.integers(0, 3),
)
# Single addresses: scopes of disjoint plain CIDRs, which changes update in place.
_HOSTS = st.integers(0, 31).map(
    lambda host: PeerBlock(Prefix.of(ipaddress.IPv4Address(f"10.9.0.{host}")))
)
_RULES = st.lists(
    st.tuples(
        st.one_of(
            st.none(),
            st.lists(_BLOCKS, max_size=2),
            st.lists(_PLAIN_BLOCKS, max_size=3),
            st.lists(_HOSTS, min_size=1, max_size=4, unique=True),
            st.lists(_HOSTS, min_size=1, max_size=4, unique=True),
        ),
        st.lists(_PORTS, max_size=2),
    ),
    max_size=3,
)
_DIRECTIONS = st.builds(
    lambda isolated, rules: (
        DirectionRules(
            isolated,
            tuple(_rule(i, peers, *ports) for i, (peers, ports) in enumerate(rules)),
            ("ns/policy",),
        )
        if isolated
        else DirectionRules()
    ),
    st.booleans(),
    _RULES,
)
_VIEWS = st.lists(
    st.tuples(_DIRECTIONS, _DIRECTIONS, _DIRECTIONS, _DIRECTIONS), min_size=3, max_size=3
)


def _endpoints(
    views: list[tuple[DirectionRules, DirectionRules, DirectionRules, DirectionRules]],
) -> dict[str, EndpointRules]:
    return {
        f"ns/p{i}": EndpointRules(f"ns/p{i}", address, ingress, egress, audit_in, audit_out)
        for i, (address, (ingress, egress, audit_in, audit_out)) in enumerate(
            zip(_ENDPOINTS, views, strict=True)
        )
    }


def assert_decides_as_compiled(
    entries: Mapping[bytes, bytes], endpoints: Mapping[str, EndpointRules]
) -> None:
    addresses = [endpoint.address for endpoint in endpoints.values()]
    for source in [*addresses, *_OTHERS]:
        for destination in addresses:
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
                    assert trie_verdict(entries, source, destination, port, view) == expected, (
                        source, destination, port, view,
                    )  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VIEWS)
def test_the_compiled_trie_decides_every_flow_as_the_compiler_does(
    views: list[tuple[DirectionRules, DirectionRules, DirectionRules, DirectionRules]],
) -> None:
    endpoints = _endpoints(views)
    assert_decides_as_compiled(rulesets.compile_rule_set(endpoints.values(), 7), endpoints)


def _mixed(old: DirectionRules, new: DirectionRules, chance: random.Random) -> DirectionRules:
    """``new``, keeping some of ``old``'s very objects (what the compile cache hands
    over when a part of a policy did not change)."""
    if chance.random() < 0.3:
        return old
    if not (old.isolated and new.isolated):
        return new
    kept = tuple(
        o if chance.random() < 0.5 else n for o, n in zip(old.rules, new.rules, strict=False)
    )
    return DirectionRules(True, kept + new.rules[len(kept) :], new.policies)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_VIEWS, min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_a_change_decides_as_a_rule_set_built_whole(
    steps: list[list[tuple[DirectionRules, DirectionRules, DirectionRules, DirectionRules]]],
    chance: random.Random,
) -> None:
    builder = RuleSetBuilder()
    entries: dict[bytes, bytes] = {}
    previous: dict[str, EndpointRules] = {}
    for revision, views in enumerate(steps, start=1):
        chosen: dict[str, EndpointRules] = {}
        for name, fresh in _endpoints(views).items():
            if chance.random() < 0.15:
                continue  # gone in this step
            old = previous.get(name)
            chosen[name] = (
                fresh
                if old is None
                else EndpointRules(
                    name,
                    fresh.address,
                    *(
                        _mixed(getattr(old, side), getattr(fresh, side), chance)
                        for side in ("ingress", "egress", "audit_ingress", "audit_egress")
                    ),
                )
            )
        delta = builder.build(chosen.values(), revision)
        for key in delta.deletes:
            del entries[key]
        entries.update(delta.upserts)
        assert entries == builder.entries
        assert delta.entries == len(entries)
        assert_decides_as_compiled(entries, chosen)
        previous = chosen


_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["move", "add", "drop", "ports", "peers"]),
        st.integers(0, 1000),
        st.integers(0, 63),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 63), min_size=1, max_size=12, unique=True), _MUTATIONS)
def test_allow_lists_changed_rule_by_rule_decide_as_compiled(
    hosts: list[int], mutations: list[tuple[str, int, int]]
) -> None:
    """An allow-list of single addresses, changed one rule at a time, the unchanged rules
    kept as the same objects: every step decides as the compiler does."""

    def block(host: int) -> PeerBlock:
        return PeerBlock(Prefix.of(ipaddress.IPv4Address(f"10.9.1.{host}")))

    def endpoints(rules: list[Rule]) -> dict[str, EndpointRules]:
        ingress = DirectionRules(True, tuple(rules), ("ns/policy",))
        return {"ns/p": EndpointRules("ns/p", ipaddress.IPv4Address("10.9.0.1"), ingress)}

    rules = [_rule(i, [block(host)], PortRange("TCP", 80, 80)) for i, host in enumerate(hosts)]
    builder = RuleSetBuilder()
    builder.build(endpoints(rules).values(), 1)
    for revision, (kind, where, host) in enumerate(mutations, start=2):
        at = where % len(rules) if rules else 0
        if kind == "move" and rules:
            rules[at] = _rule(at, [block(host)], *rules[at].ports)
        elif kind == "add" or not rules:
            rules.append(_rule(len(rules), [block(host)], PortRange("TCP", 80, 81)))
        elif kind == "drop":
            rules.pop()
        elif kind == "ports":
            rules[at] = _rule(at, rules[at].peers, PortRange("UDP" if host % 2 else "TCP", 80, 80))
        else:
            rules[at] = _rule(at, [*(rules[at].peers or ()), block(host)], *rules[at].ports)
        current = endpoints(rules)
        builder.build(current.values(), revision)
        addresses = [ipaddress.IPv4Address(f"10.9.1.{h}") for h in range(64)]
        server = ipaddress.IPv4Address("10.9.0.1")
        for source in addresses:
            for port in (80, 81):
                expected = compiling.verdict(current, source, server, "TCP", port)
                assert trie_verdict(builder.entries, source, server, port, "enforce") == expected


# ------------------------------------------------- large allow-lists, changed in place


def allow_list(count: int, shift: int = 0, port: int = 5201) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            "bench/allow",
            index,
            (PeerBlock(Prefix.of(ipaddress.IPv4Address((100 << 24 | 64 << 16) + index + shift))),),
            (PortRange("TCP", port, port),),
        )
        for index in range(count)
    )


SERVER = ipaddress.IPv4Address("10.88.0.2")


def server(rules: tuple[Rule, ...]) -> EndpointRules:
    return EndpointRules(
        "bench/server", SERVER, ingress=DirectionRules(True, rules, ("bench/allow",))
    )


def test_an_allow_list_shares_one_port_entry() -> None:
    builder = RuleSetBuilder()
    delta = builder.build([server(allow_list(1000))], 1)
    # meta (2), the endpoint, 1,000 peers, one port prefix
    assert delta.entries == 1004
    assert delta.rules == 1000


def test_one_changed_rule_of_many_writes_its_entries_alone() -> None:
    rules = allow_list(2000)
    builder = RuleSetBuilder()
    builder.build([server(rules)], 1)
    changed = list(rules)
    changed[700] = allow_list(1, shift=5000)[0]._replace(index=700)
    delta = builder.build([server(tuple(changed))], 2)
    # the old peer entry goes, the new one comes, and the meta entry says revision 2
    assert (len(delta.deletes), len(delta.upserts)) == (1, 2)
    fresh = rulesets.compile_rule_set([server(tuple(changed))], 2)
    assert builder.entries == fresh
    client = ipaddress.IPv4Address((100 << 24 | 64 << 16) + 5000)
    old_client = ipaddress.IPv4Address((100 << 24 | 64 << 16) + 700)
    assert side_allows(builder.entries, 1, 0, 0, client, 5201) == rulesets.rule_key(
        "bench/allow", "ingress", 700
    )
    assert side_allows(builder.entries, 1, 0, 0, old_client, 5201) is None


def test_one_changed_peer_of_a_long_peer_list_writes_its_entry_alone() -> None:
    blocks = tuple(rule.peers[0] for rule in allow_list(3000) if rule.peers)
    rule = Rule("bench/allow", 0, blocks, (PortRange("TCP", 5201, 5201),))
    builder = RuleSetBuilder()
    builder.build([server((rule,))], 1)
    moved = list(blocks)
    moved[10] = PeerBlock(net("192.0.2.1/32"))
    changed = rule._replace(peers=tuple(moved))
    delta = builder.build([server((changed,))], 2)
    assert (len(delta.deletes), len(delta.upserts)) == (1, 2)
    assert builder.entries == rulesets.compile_rule_set([server((changed,))], 2)


def test_a_change_that_nests_compiles_the_scope_whole_and_stays_exact() -> None:
    rules = allow_list(50)
    builder = RuleSetBuilder()
    builder.build([server(rules)], 1)
    wide = Rule("bench/allow", 50, (PeerBlock(net("100.64.0.0/16")),), (PortRange("UDP", 53, 53),))
    endpoints = {"bench/server": server((*rules, wide))}
    builder.build(endpoints.values(), 2)
    assert_decides_as_compiled(builder.entries, endpoints)
    inside = ipaddress.IPv4Address((100 << 24 | 64 << 16) + 3)
    assert side_allows(builder.entries, 1, 0, 0, inside, 53, protocol=17) == rulesets.rule_key(
        "bench/allow", "ingress", 50
    )
    assert side_allows(builder.entries, 1, 0, 0, inside, 5201) == rulesets.rule_key(
        "bench/allow", "ingress", 3
    )


def test_endpoints_keep_their_ids_and_share_no_address() -> None:
    a = EndpointRules("ns/a", ipaddress.IPv4Address("10.9.0.1"))
    b = EndpointRules("ns/b", ipaddress.IPv4Address("10.9.0.2"))
    builder = RuleSetBuilder()
    builder.build([a, b], 1)
    before = builder.entries[rulesets.endpoint_key(b.address)]
    delta = builder.build([b], 2)
    assert builder.entries[rulesets.endpoint_key(b.address)][:4] == before[:4]
    assert rulesets.endpoint_key(a.address) in delta.deletes
    with pytest.raises(ValueError, match="share the address"):
        builder.build([b, EndpointRules("ns/c", b.address)], 3)
    assert builder.entries[rulesets.endpoint_key(b.address)] == before  # unchanged


def test_the_meta_entries_say_what_the_trie_holds() -> None:
    rule = _rule(0, [PeerBlock(net("10.9.0.1/32"))], PortRange("TCP", 80, 80))
    endpoint = EndpointRules(
        "ns/a",
        ipaddress.IPv4Address("10.9.0.2"),
        DirectionRules(True, (rule,), ("ns/policy",)),
    )
    builder = RuleSetBuilder()
    delta = builder.build([endpoint], revision=41)
    assert rulesets.VALUE.unpack(builder.entries[rulesets.META_KEY]) == (1, 1, 41)
    assert rulesets.VALUE.unpack(builder.entries[rulesets.META_COUNTS_KEY]) == (
        len(builder.entries),
        0,
        0,
    )
    assert delta.entries == len(builder.entries)
    assert builder.names.get(rulesets.rule_key("ns/policy", "ingress", 0)) == rulesets.RuleName(
        "ns/policy", "ingress", 0
    )
    assert builder.names.get(rulesets.rule_key("ns/policy", "egress", 0)) is None
    (denier,) = builder.deniers.values()
    assert denier == rulesets.Denier("ns/a", (("ns/policy",), (), (), ()))


@given(st.text(min_size=1, max_size=20), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_rule_keys_name_their_rule_and_no_other(policy: str, index: int, other: int) -> None:
    names = rulesets.RuleNames()
    names.add(policy, "ingress")
    names.add("ns/another", "ingress")
    key = rulesets.rule_key(policy, "ingress", index)
    assert names.get(key) == rulesets.RuleName(policy, "ingress", index)
    if other != index:
        assert rulesets.rule_key(policy, "ingress", other) != key
    assert rulesets.rule_key(policy, "egress", index) != key
