"""Compiled policy: per endpoint and direction, the allow rules the datapath enforces.

This is the contract between the pure compiler (``compiling``) and the node's datapath
(the agent programs these into eBPF maps). Selectors and named ports are already
resolved here: peers are address blocks, ports are concrete ranges.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["TCP", "UDP", "SCTP"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, order=True)
class PortRange:
    """``protocol`` None means every protocol (and then every port)."""

    protocol: Protocol | None
    first: int = 0  # 0..65535; first=0, last=65535 means every port of the protocol
    last: int = 65535


@dataclass(frozen=True)
class PeerBlock:
    """Addresses in ``cidr`` but in none of ``excepts`` (a pod is a /32 or /128 block)."""

    cidr: Network
    excepts: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One allow: to/from any of ``peers`` (None: any peer), on any of ``ports``."""

    policy: str  # "<namespace>/<name>"
    index: int  # position of the rule in the policy's ingress or egress list
    peers: tuple[PeerBlock, ...] | None
    ports: tuple[PortRange, ...]  # empty: never matches; all traffic is PortRange(None)


@dataclass(frozen=True)
class DirectionRules:
    """``isolated`` False: everything is allowed in this direction (no policy selects it)."""

    isolated: bool = False
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class EndpointRules:
    """What one endpoint (a pod's address) allows.

    ``enforce`` comes from policies in enforce mode only; ``audit`` from all policies.
    A flow ``enforce`` allows but ``audit`` denies is passed and counted as an audit drop.
    """

    endpoint: str  # "<namespace>/<pod>"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ingress: DirectionRules = field(default_factory=DirectionRules)
    egress: DirectionRules = field(default_factory=DirectionRules)
    audit_ingress: DirectionRules = field(default_factory=DirectionRules)
    audit_egress: DirectionRules = field(default_factory=DirectionRules)
