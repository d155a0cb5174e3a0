"""Network policy documents and the topology they are judged against.

Two kinds of document are accepted:

- ``networking.k8s.io/v1`` ``NetworkPolicy``, unchanged: it is always enforced.
- ``bpfleet.io/v1alpha1`` ``NetworkPolicy``: the same spec plus ``nodeSelector`` (which
  nodes enforce it) and ``mode`` (``enforce``, or ``audit``: report, never drop).

Field names are camelCase on the wire (``podSelector``, ``ipBlock``, ``except``,
``endPort``...) and snake_case in Python. ``None`` and an empty list mean different
things in a few places (``policyTypes``, ``ingress``, ``egress``), so sequences keep
``None`` for "absent".

These models check types only; ``validating.validate`` adds what the Kubernetes API
server checks (port ranges, named ports, CIDRs, label syntax) and normalises CIDRs.
Everything downstream (the simulator, the compiler) expects validated policies.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

Protocol = Literal["TCP", "UDP", "SCTP"]
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
PolicyType = Literal["Ingress", "Egress"]
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
Mode = Literal["enforce", "audit"]
Direction = Literal["ingress", "egress"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = dict[str, str]

KUBERNETES_API_VERSION = "networking.k8s.io/v1"
BPFLEET_API_VERSION = "bpfleet.io/v1alpha1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# --- label selectors -------------------------------------------------------------


class LabelSelectorRequirement(_Wire):
    key: StrictStr
    operator: Operator
    values: tuple[StrictStr, ...] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case "In":
                return present and labels[self.key] in (self.values or ())
            case "NotIn":
                return not present or labels[self.key] not in (self.values or ())
            case "Exists":
                return present
            case "DoesNotExist":
                return not present


class LabelSelector(_Wire):
    """Empty selects everything; the requirements are ANDed."""

    match_labels: dict[StrictStr, StrictStr] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or ())

    def describe(self) -> str:
        """A kubectl-style selector string (``pod=a,ns in (x,y)``); ``<all>`` when empty."""
        parts = [f"{key}={value}" for key, value in (self.match_labels or {}).items()]
        for req in self.match_expressions or ():
            values = ",".join(req.values or ())
            parts.append(
                {
                    "In": f"{req.key} in ({values})",
                    "NotIn": f"{req.key} notin ({values})",
                    "Exists": req.key,
                    "DoesNotExist": f"!{req.key}",
                }[req.operator]
            )
        return ",".join(parts) or "<all>"


# --- the NetworkPolicy spec ------------------------------------------------------


_IPV4_CIDR = re.compile(
    r"^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})/(\d{1,2})$"
)


@functools.lru_cache(maxsize=1 << 16)
def parse_network(text: str) -> Network:
    """``ipaddress.ip_network(text, strict=False)``, faster for the usual ``a.b.c.d/n``
    and remembered: policies carry thousands of CIDRs, and a node compiles them all again
    whenever any endpoint of the fleet changes."""
    match = _IPV4_CIDR.match(text)
    if match is not None:
        *octets, length = (int(group) for group in match.groups())
        if length <= 32 and max(octets) <= 255:
            value = octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]
            return ipaddress.IPv4Network((value & ~((1 << (32 - length)) - 1), length))
    return ipaddress.ip_network(text, strict=False)


class IPBlock(_Wire):
    cidr: StrictStr
    except_: tuple[StrictStr, ...] | None = Field(default=None, alias="except")

    @cached_property
    def network(self) -> Network:
        """The block (valid once validated; host bits are ignored)."""
        return parse_network(self.cidr)

    @cached_property
    def excepted(self) -> tuple[Network, ...]:
        return tuple(parse_network(item) for item in self.except_ or ())

    def contains(self, address: Address) -> bool:
        if address not in self.network:
            return False
        return not any(address in block for block in self.excepted)


class NetworkPolicyPeer(_Wire):
    """Selectors in one peer are ANDed; ``ipBlock`` stands alone."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


def _int_or_string(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a port number or a port name")
    return value


IntOrString = Annotated[StrictInt | StrictStr, BeforeValidator(_int_or_string)]


class NetworkPolicyPort(_Wire):
    protocol: Protocol = "TCP"
    port: IntOrString | None = None  # a number, or the name of a container port
    end_port: StrictInt | None = None


class NetworkPolicyIngressRule(_Wire):
    from_: tuple[NetworkPolicyPeer, ...] | None = Field(default=None, alias="from")
    ports: tuple[NetworkPolicyPort, ...] | None = None

    @property
    def peers(self) -> tuple[NetworkPolicyPeer, ...] | None:
        return self.from_


class NetworkPolicyEgressRule(_Wire):
    to: tuple[NetworkPolicyPeer, ...] | None = None
    ports: tuple[NetworkPolicyPort, ...] | None = None

    @property
    def peers(self) -> tuple[NetworkPolicyPeer, ...] | None:
        return self.to


Rule = NetworkPolicyIngressRule | NetworkPolicyEgressRule


class NetworkPolicySpec(_Wire):
    pod_selector: LabelSelector = Field(default_factory=LabelSelector)
    policy_types: tuple[PolicyType, ...] | None = None
    ingress: tuple[NetworkPolicyIngressRule, ...] | None = None
    egress: tuple[NetworkPolicyEgressRule, ...] | None = None

    def effective_policy_types(self) -> frozenset[PolicyType]:
        """As the API server defaults them: Ingress always, Egress if there are egress rules."""
        if self.policy_types:
            return frozenset(self.policy_types)
        if self.egress:
            return frozenset(("Ingress", "Egress"))
        return frozenset(("Ingress",))

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return (self.ingress or ()) if direction == "ingress" else (self.egress or ())


class BpfleetNetworkPolicySpec(NetworkPolicySpec):
    node_selector: LabelSelector | None = Field(
        default=None, description="Nodes that enforce the policy; absent: every node."
    )
    mode: Mode = Field(
        default="enforce", description="enforce: drop what is not allowed; audit: only report."
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    name: StrictStr
    namespace: StrictStr = "default"
    labels: dict[StrictStr, StrictStr] | None = None


class _PolicyDocument(_Wire):
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta

    @cached_property
    def key(self) -> str:
        """``<namespace>/<name>``."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


class NetworkPolicy(_PolicyDocument):
    """A plain ``networking.k8s.io/v1`` NetworkPolicy: always enforced, on every node."""

    api_version: Literal["networking.k8s.io/v1"]
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)

    @property
    def mode(self) -> Mode:
        return "enforce"

    @property
    def node_selector(self) -> LabelSelector | None:
        return None


class BpfleetNetworkPolicy(_PolicyDocument):
    """``bpfleet.io/v1alpha1`` NetworkPolicy: the same spec, plus node selector and mode."""

    api_version: Literal["bpfleet.io/v1alpha1"]
    spec: BpfleetNetworkPolicySpec = Field(default_factory=BpfleetNetworkPolicySpec)

    @property
    def mode(self) -> Mode:
        return self.spec.mode

    @property
    def node_selector(self) -> LabelSelector | None:
        return self.spec.node_selector


Policy = NetworkPolicy | BpfleetNetworkPolicy
AnyPolicy = Annotated[Policy, Field(discriminator="api_version")]  # for APIs taking either kind


# --- topology --------------------------------------------------------------------


class ContainerPort(_Wire):
    name: StrictStr | None = None
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = "TCP"


class Pod(_Wire):
    labels: Labels = Field(default_factory=dict)
    ip: Address
    ports: tuple[ContainerPort, ...] = ()
    node: str | None = Field(default=None, description="The node the pod runs on, if known.")

    def named_port(self, name: str, protocol: Protocol) -> int | None:
        """The number of the container port ``name`` serving ``protocol``, if any."""
        for port in self.ports:
            if port.name == name and port.protocol == protocol:
                return port.port
        return None

    @field_validator("ports")
    @classmethod
    def _unique_names(cls, ports: tuple[ContainerPort, ...]) -> tuple[ContainerPort, ...]:
        names = [port.name for port in ports if port.name is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"container port names must be unique: {', '.join(duplicates)}")
        return ports


class Topology(_Wire):
    """Namespaces (with labels) and pods ``"<namespace>/<name>"`` (labels, IP, ports).

    ``order`` fixes the order of the matrix (default: the order of ``pods``); ``nodes``
    gives node labels, for policies with a ``nodeSelector``. Every namespace carries the
    ``kubernetes.io/metadata.name`` label, as the API server guarantees.
    """

    namespaces: dict[str, Labels]
    pods: dict[str, Pod]
    order: tuple[str, ...] | None = None
    nodes: dict[str, Labels] = Field(default_factory=dict)
    loopback: str | None = Field(default=None, description="A note; loopback is never judged.")

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        for key, pod in self.pods.items():
            namespace, slash, name = key.partition("/")
            if not slash or not namespace or not name or "/" in name:
                raise ValueError(f"pod {key!r}: pods are named '<namespace>/<pod>'")
            if namespace not in self.namespaces:
                raise ValueError(f"pod {key!r}: namespace {namespace!r} is not in namespaces")
            if pod.node is not None and self.nodes and pod.node not in self.nodes:
                raise ValueError(f"pod {key!r}: node {pod.node!r} is not in nodes")
        owners: dict[Address, str] = {}
        for key, pod in self.pods.items():
            if pod.ip in owners:
                raise ValueError(f"pods {owners[pod.ip]!r} and {key!r} share the IP {pod.ip}")
            owners[pod.ip] = key
        if self.order is not None and sorted(self.order) != sorted(self.pods):
            raise ValueError("order must list every pod exactly once")
        return self

    @field_validator("namespaces")
    @classmethod
    def _name_label(cls, namespaces: dict[str, Labels]) -> dict[str, Labels]:
        return {name: {NAMESPACE_NAME_LABEL: name, **labels} for name, labels in namespaces.items()}

    def pod_order(self) -> tuple[str, ...]:
        return self.order if self.order is not None else tuple(self.pods)

    def namespace_of(self, pod_key: str) -> str:
        return pod_key.partition("/")[0]

    def namespace_labels(self, pod_key: str) -> Labels:
        return self.namespaces[self.namespace_of(pod_key)]

    def node_labels(self, pod_key: str) -> Labels:
        """The labels of the pod's node; a pod on an unknown node has none."""
        node = self.pods[pod_key].node
        return self.nodes.get(node, {}) if node is not None else {}

    def pod_at(self, address: Address) -> str | None:
        for key, pod in self.pods.items():
            if pod.ip == address:
                return key
        return None

    def with_labels(
        self,
        podlabels: Mapping[str, Mapping[str, str]] | None = None,
        nslabels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Topology:
        """A copy with labels added (or changed) on pods and namespaces."""
        pods = dict(self.pods)
        for key, labels in (podlabels or {}).items():
            if key not in pods:
                raise KeyError(f"no pod {key!r} in the topology")
            pods[key] = pods[key].model_copy(update={"labels": {**pods[key].labels, **labels}})
        namespaces = dict(self.namespaces)
        for name, labels in (nslabels or {}).items():
            if name not in namespaces:
                raise KeyError(f"no namespace {name!r} in the topology")
            namespaces[name] = {**namespaces[name], **labels}
        return self.model_copy(update={"pods": pods, "namespaces": namespaces})


def selects(policy: Policy, topology: Topology, pod_key: str) -> bool:
    """Whether ``policy`` applies to the pod: its namespace, its pod selector, its nodes."""
    if topology.namespace_of(pod_key) != policy.namespace:
        return False
    if not policy.spec.pod_selector.matches(topology.pods[pod_key].labels):
        return False
    node_selector = policy.node_selector
    return node_selector is None or node_selector.matches(topology.node_labels(pod_key))
