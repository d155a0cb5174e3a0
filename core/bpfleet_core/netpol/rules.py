"""Compiled policy: per endpoint and direction, the allow rules the datapath enforces.

This is the contract between the pure compiler (``compiling``) and the node's datapath
(the agent programs these into eBPF maps). Selectors and named ports are already
resolved here: peers are address blocks, ports are concrete ranges.

Blocks are ``Prefix`` values in one 128-bit space (IPv4 as ``::ffff:a.b.c.d``), the
form the datapath's trie keys use: a policy may carry ten thousand CIDRs, and building
an ``ipaddress`` network for each costs more than the rest of compiling them.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Protocol = Literal["TCP", "UDP", "SCTP"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ADDRESS_BITS = 128
IPV4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, where IPv4 lives in the 128-bit space
_IPV4_BASE = 96  # an IPv4 /n is a /(96+n) there
_IPV4_MAPPED_INT = IPV4_MAPPED
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def address_bits(address: Address) -> int:
    """An address in the 128-bit space (IPv4 as ::ffff:a.b.c.d)."""
    return IPV4_MAPPED | int(address) if address.version == 4 else int(address)


class Prefix(NamedTuple):
    """An address block in the 128-bit space: IPv4 a.b.c.d/n is ::ffff:a.b.c.d/(96+n)."""

    value: int  # host bits are always zero
    length: int  # 0..128

    @classmethod
    def of(cls, block: Network | Address) -> Prefix:
        if isinstance(block, ipaddress.IPv4Network | ipaddress.IPv6Network):
            start = int(block.network_address)
            if block.version == 4:
                return cls(IPV4_MAPPED | start, _IPV4_BASE + block.prefixlen)
            return cls(start, block.prefixlen)
        return cls(address_bits(block), ADDRESS_BITS)

    @classmethod
    def parse(cls, text: str) -> Prefix:
        """``a.b.c.d/n`` or an IPv6 CIDR, host bits ignored; ``ValueError`` if neither.
        (Written for speed: a part may carry ten thousand of them, all new.)"""
        address, slash, length_text = text.partition("/")
        if not slash or not length_text.isdigit():
            raise ValueError(f"not a CIDR: {text!r}")
        length = int(length_text)
        try:
            if ":" in address:
                value, base = int.from_bytes(socket.inet_pton(_AF_INET6, address)), 0
            else:
                value, base = (
                    _IPV4_MAPPED_INT | int.from_bytes(socket.inet_pton(_AF_INET, address)),
                    _IPV4_BASE,
                )
        except OSError:
            raise ValueError(f"not a CIDR: {text!r}") from None
        if length > ADDRESS_BITS - base:
            raise ValueError(f"not a CIDR: {text!r}")
        host_bits = ADDRESS_BITS - base - length
        return cls(value >> host_bits << host_bits, base + length)

    def contains(self, address: Address) -> bool:
        shift = ADDRESS_BITS - self.length
        return address_bits(address) >> shift == self.value >> shift

    @property
    def network(self) -> Network:
        if self.length >= _IPV4_BASE and self.value >> 32 == IPV4_MAPPED >> 32:
            return ipaddress.IPv4Network((self.value & 0xFFFF_FFFF, self.length - _IPV4_BASE))
        return ipaddress.IPv6Network((self.value, self.length))

    def __str__(self) -> str:
        return str(self.network)


class PortRange(NamedTuple):
    """``protocol`` None means every protocol (and then every port)."""

    protocol: Protocol | None
    first: int = 0  # 0..65535; first=0, last=65535 means every port of the protocol
    last: int = 65535


class PeerBlock(NamedTuple):
    """Addresses in ``cidr`` but in none of ``excepts`` (a pod is a /128 block)."""

    cidr: Prefix
    excepts: tuple[Prefix, ...] = ()

    def contains(self, address: Address) -> bool:
        return self.cidr.contains(address) and not any(
            hole.contains(address) for hole in self.excepts
        )


class Rule(NamedTuple):
    """One allow: to/from any of ``peers`` (None: any peer), on any of ``ports``."""

    policy: str  # "<namespace>/<name>"
    # Position of the rule in the policy's ingress or egress list. (It hides tuple's
    # index method, which nothing here uses; mypy only knows it hides it.)
    index: int  # type: ignore[assignment]
    peers: tuple[PeerBlock, ...] | None
    ports: tuple[PortRange, ...]  # empty: never matches; all traffic is PortRange(None)


@dataclass(frozen=True)
class DirectionRules:
    """``isolated`` False: everything is allowed in this direction (no policy selects it).

    ``policies`` are the policies that isolate it (``"<namespace>/<name>"``, in policy
    order), rules or not: what this direction denies, they deny."""

    isolated: bool = False
    rules: tuple[Rule, ...] = ()
    policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointRules:
    """What one endpoint (a pod's address) allows.

    ``enforce`` comes from policies in enforce mode only; ``audit`` from all policies.
    A flow ``enforce`` allows but ``audit`` denies is passed and counted as an audit drop.
    """

    endpoint: str  # "<namespace>/<pod>"
    address: Address
    ingress: DirectionRules = field(default_factory=DirectionRules)
    egress: DirectionRules = field(default_factory=DirectionRules)
    audit_ingress: DirectionRules = field(default_factory=DirectionRules)
    audit_egress: DirectionRules = field(default_factory=DirectionRules)
