"""A NetworkPolicy stored in the API reaches the agent whose endpoint it selects, and
real TCP between pods on two nodes shows it enforced, changed and removed.

    node A (netns): agent, pod shop/db (10.213.1.2) behind veth vdb
    node B (netns): agent, pods shop/web (10.213.2.2) and shop/other (10.213.2.3)

The nodes route each other's pod addresses over the bridge, so web -> db is a flow
between nodes, decided by node A's datapath with web's address taken from the fleet
topology node B declared. The local fleet sets each node's pod CIDRs (A 10.213.1.0/24,
B 10.213.2.0/24) and the namespace's labels through the admin API, as the operator does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bpfleet_agent import lab
from bpfleet_cli.localfleet import Bridge, FleetNode, ip, local_fleet
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import POLICY_PROGRAM
from tests import services
from tests.conftest import SignedCatalog
from tests.e2e.conftest import uploaded
from tests.polling import wait_for

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.services,
    # PostgreSQL only: tests/api runs the policy logic on both databases; this test is
    # about real nodes, and a second run on SQLite would only double its time.
    pytest.mark.parametrize("api", ["postgres"], indirect=True),
]

REPO = Path(__file__).resolve().parents[2]
PORT = 8080
GATEWAY = "169.254.1.1"
PATH = "/v1/policies/shop/db-ingress"
DB, WEB, OTHER = "shop/db", "shop/web", "shop/other"


def recorded_features() -> dict[str, Any]:
    """This machine's kind of feature report, so agents start without probing."""
    report = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    return dict(
        json.loads(report.model_copy(update={"kernel_release": os.uname().release}).to_json())
    )


@contextlib.contextmanager
def pods(
    node: FleetNode, peer: FleetNode, specs: dict[str, tuple[str, str]], subnet: str
) -> Iterator[dict[str, lab.LabPod]]:
    """Pods as namespaces behind ``node``: a veth each (host side in the node's
    namespace), /32 routes, static neighbours, and a route to ``peer``'s pods."""
    created: list[str] = []
    made: dict[str, lab.LabPod] = {}

    def run(command: str, netns: str) -> None:
        ip(*command.split(), netns=netns)

    try:
        run(f"route add {subnet} via {peer.address}", node.netns)
        for index, (key, (address, interface)) in enumerate(specs.items()):
            netns = f"bpflpod-{uuid.uuid4().hex[:8]}"
            ip("netns", "add", netns)
            created.append(netns)
            host_mac, pod_mac = f"02:b0:00:00:00:{index:02x}", f"02:b1:00:00:00:{index:02x}"
            for command in (
                f"link add {interface} address {host_mac} type veth "
                f"peer name eth0 address {pod_mac} netns {netns}",
                f"link set {interface} up",
                f"route add {address}/32 dev {interface}",
                f"neigh replace {address} lladdr {pod_mac} dev {interface} nud permanent",
            ):
                run(command, node.netns)
            for command in (
                "link set lo up",
                "link set eth0 up",
                f"addr add {address}/32 dev eth0",
                f"route add {GATEWAY} dev eth0 scope link",
                f"route add default via {GATEWAY} dev eth0",
                f"neigh replace {GATEWAY} lladdr {host_mac} dev eth0 nud permanent",
            ):
                run(command, netns)
            made[key] = lab.LabPod(key, ipaddress.IPv4Address(address), netns, interface)
        subprocess.run(
            ["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
        )
        yield made
    finally:
        for netns in created:
            with contextlib.suppress(Exception):
                ip("netns", "del", netns)


def declare(node: FleetNode, endpoints: list[dict[str, Any]]) -> None:
    document = {"endpoints": endpoints}
    (node.state_dir / "endpoints.yaml").write_text(yaml.safe_dump(document))


def endpoint(name: str, address: str, interface: str, **labels: str) -> dict[str, Any]:
    return {
        "namespace": "shop",
        "name": name,
        "labels": labels,
        "ip": address,
        "interface": interface,
        "ports": [{"name": "pg", "port": PORT, "protocol": "TCP"}],
    }


def allowed(everything: dict[str, lab.LabPod]) -> set[tuple[str, str]]:
    matrix = lab.probe_matrix(everything, "TCP", PORT, timeout=1.5)
    return {(c, s) for c, row in matrix.items() for s, ok in row.items() if ok and c != s}


EVERY_PAIR = {(c, s) for c in (DB, WEB, OTHER) for s in (DB, WEB, OTHER) if c != s}


def summary_is(client: httpx.Client, generation: int, **counts: int) -> Callable[[], Any]:
    def check() -> Any:
        view = client.get(PATH).json()
        expected = {"desired": 1, "enforcing": 0, "failed": 0, "pending": 0, **counts}
        return view if view["generation"] == generation and view["summary"] == expected else None

    return check


def db_policy(peer_app: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "shop", "name": "db-ingress"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": peer_app}}}],
                    "ports": [{"port": "pg"}],
                }
            ],
        },
    }


def test_a_policy_is_enforced_on_the_node_of_the_endpoint_it_selects(
    api: services.Api, network: Bridge, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    uploaded(api, signed_catalog, "netpol")
    features = recorded_features()
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path,
            labels=[{"zone": "a"}, {"zone": "b"}],
            features={0: features, 1: features},
            admin_token=api.admin_token,
            namespaces={"shop": {"team": "shop"}},
        ) as (node_a, node_b),
        pods(node_a, node_b, {DB: ("10.213.1.2", "vdb")}, "10.213.2.0/24") as on_a,
        pods(
            node_b,
            node_a,
            {WEB: ("10.213.2.2", "vweb"), OTHER: ("10.213.2.3", "vother")},
            "10.213.1.0/24",
        ) as on_b,
        api.client() as client,
    ):
        everything = {**on_a, **on_b}
        servers = lab.Servers(list(everything.values()), ports=(PORT,))
        try:
            declare(node_a, [endpoint("db", "10.213.1.2", "vdb", app="db")])
            declare(
                node_b,
                [
                    endpoint("web", "10.213.2.2", "vweb", app="web"),
                    endpoint("other", "10.213.2.3", "vother", app="other"),
                ],
            )

            def declared() -> bool:
                return all(
                    client.get(f"/v1/nodes/{node.name}").json().get("endpoints")
                    for node in (node_a, node_b)
                )

            wait_for(declared, what="both nodes to declare their endpoints")
            assert (node_a.pod_cidr, node_b.pod_cidr) == ("10.213.1.0/24", "10.213.2.0/24")
            labels = {row["name"]: row["labels"] for row in client.get("/v1/namespaces").json()}
            assert labels["shop"] == {"kubernetes.io/metadata.name": "shop", "team": "shop"}
            assert allowed(everything) == EVERY_PAIR  # no policy: nothing isolated

            # Only db is selected: only node A gets the policy, and only web may reach db.
            put = client.put(PATH, json=db_policy("web"))
            assert put.status_code == 200, put.text
            view = wait_for(
                summary_is(client, 1, enforcing=1), what="node A to enforce generation 1"
            )
            assert view["summary"]["desired"] == 1
            assert allowed(everything) == EVERY_PAIR - {(OTHER, DB)}
            rows = client.get(f"{PATH}/nodes").json()
            assert [(r["node"], r["generation"], r["state"]) for r in rows] == [
                (node_a.name, 1, "Enforcing")
            ]

            wait_for(
                lambda: (node_a.status().get("policy") or {}).get("denied"), what="a counted drop"
            )
            status = node_a.status()["policy"]
            assert status["state"] == "Enforcing"
            assert status["policies"] == ["shop/db-ingress@1"]
            assert status["endpoints"] == 1
            assert (node_a.pin_root / POLICY_PROGRAM).is_dir()
            shown = subprocess.run(
                [str(REPO / ".venv" / "bin" / "bpfleet"), "agent", "status"],
                env=node_a.environment,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "network policies" in shown
            assert "Enforcing" in shown
            assert "shop/db-ingress@1" in shown
            # Node B hosts no selected endpoint: no policy part, no datapath.
            assert node_b.status().get("policy") is None
            received = node_b.state_dir / "assignments.json"
            if received.exists():  # B may have no assignments at all: fine too
                assert json.loads(received.read_text()).get("policy") is None
            assert not (node_b.pin_root / POLICY_PROGRAM).exists()

            # The agent stops: the pinned datapath goes on enforcing; restarted, the
            # agent adopts it and reports it again.
            node_a.stop()
            assert allowed(everything) == EVERY_PAIR - {(OTHER, DB)}
            (node_a.state_dir / "status.json").unlink()
            node_a.start()
            wait_for(
                lambda: (
                    (node_a.status().get("policy") or {}).get("policies") == ["shop/db-ingress@1"]
                ),
                what="the restarted agent to report the policy",
            )

            # Generation 2 swaps who may reach db.
            assert client.put(PATH, json=db_policy("other")).json()["generation"] == 2
            wait_for(summary_is(client, 2, enforcing=1), what="node A to enforce generation 2")
            assert allowed(everything) == EVERY_PAIR - {(WEB, DB)}

            # Deleted: node A reports it gone, the per-node list empties, traffic flows.
            assert client.delete(PATH).status_code == 204
            wait_for(
                lambda: client.get(f"{PATH}/nodes").json() == [], what="the node rows to empty"
            )
            assert allowed(everything) == EVERY_PAIR
            assert not (node_a.pin_root / POLICY_PROGRAM).exists()
            assert node_a.status().get("policy") is None
        finally:
            servers.close()


# ------------------------------------------------ counters: datapath -> agent -> API

THREE = "/v1/policies/shop/three-rules"
COUNTED_PORTS = (PORT, 8081, 8082)


def three_rules(mode: str) -> dict[str, Any]:
    """db accepts web on TCP 8080 (rule 0), other on TCP 8081 (rule 1), and both, by
    their subnet, on UDP 8082 (rule 2)."""
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "shop", "name": "three-rules"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "mode": mode,
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                    "ports": [{"port": PORT}],
                },
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "other"}}}],
                    "ports": [{"port": 8081}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "10.213.2.0/24"}}],
                    "ports": [{"port": 8082, "protocol": "UDP"}],
                },
            ],
        },
    }


def exchange(client: lab.LabPod, server: lab.LabPod, protocol: str, port: int) -> bool:
    """One new flow (a fresh socket) from ``client`` to ``server``: echoed or not."""
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    with lab.entered(client.netns):
        sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(1.0)
    try:
        sock.connect((str(server.address), port))
        sock.send(b"count me")
        return sock.recv(64) == b"count me"
    except OSError:
        return False
    finally:
        sock.close()


def counters_are(
    client: httpx.Client, generation: int, rules: list[int], **totals: int
) -> Callable[[], Any]:
    def check() -> Any:
        view = client.get(THREE).json()
        counted = view["policyCounters"]
        flows = [rule["flows"] for rule in counted["rules"]]
        if view["generation"] != generation or flows != rules:
            return None
        if any(counted[name] < least for name, least in totals.items()):
            return None
        return counted

    return check


def test_each_rule_counts_its_flows_from_the_datapath_to_the_api(
    api: services.Api,
    network: Bridge,
    signed_catalog: SignedCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real traffic through a policy of three rules: each rule's flows reach the policy's
    view and its node row, in enforce mode (what no rule allows is denied) and in audit
    mode (everything passes; what no rule allows is counted as audit-denied)."""
    monkeypatch.setenv("BPFLEET_AGENT_STATUS_REFRESH_INTERVAL", "1")  # counters, soon
    uploaded(api, signed_catalog, "netpol")
    features = recorded_features()
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path,
            labels=[{"zone": "a"}, {"zone": "b"}],
            features={0: features, 1: features},
            admin_token=api.admin_token,
            namespaces={"shop": {"team": "shop"}},
        ) as (node_a, node_b),
        pods(node_a, node_b, {DB: ("10.213.1.2", "vdb")}, "10.213.2.0/24") as on_a,
        pods(
            node_b,
            node_a,
            {WEB: ("10.213.2.2", "vweb"), OTHER: ("10.213.2.3", "vother")},
            "10.213.1.0/24",
        ) as on_b,
        api.client() as client,
    ):
        everything = {**on_a, **on_b}
        db, web, other = everything[DB], everything[WEB], everything[OTHER]
        servers = lab.Servers([db], ports=COUNTED_PORTS)
        try:
            declare(node_a, [endpoint("db", "10.213.1.2", "vdb", app="db")])
            declare(
                node_b,
                [
                    endpoint("web", "10.213.2.2", "vweb", app="web"),
                    endpoint("other", "10.213.2.3", "vother", app="other"),
                ],
            )
            traffic = [
                (web, "TCP", PORT, 3, True),  # rule 0
                (other, "TCP", 8081, 2, True),  # rule 1
                (web, "UDP", 8082, 2, True),  # rule 2
                (other, "UDP", 8082, 1, True),  # rule 2
                (web, "TCP", 8081, 2, False),  # no rule allows it
            ]
            for generation, mode in ((1, "enforce"), (2, "audit")):
                put = client.put(THREE, json=three_rules(mode))
                assert put.status_code == 200, put.text
                assert put.json()["generation"] == generation
                wait_for(
                    summary_is_for(client, THREE, generation),
                    what=f"node A to enforce generation {generation}",
                )
                dropped_before = client.get(f"{THREE}/nodes").json()[0]["counters"]["denied"]
                for source, protocol, port, times, allowed_when_enforced in traffic:
                    for _ in range(times):
                        passed = exchange(source, db, protocol, port)
                        assert passed == (allowed_when_enforced or mode == "audit"), (
                            source.key, protocol, port, mode,
                        )  # fmt: skip
                if mode == "enforce":
                    counted = wait_for(
                        counters_are(client, 1, [3, 2, 3], denied=2),
                        what="the rules' flows and the drops in the policy's view",
                    )
                    assert counted["auditDenied"] == 0
                else:
                    counted = wait_for(
                        counters_are(client, 2, [3, 2, 3], auditDenied=2),
                        what="the audited rules' flows in the policy's view",
                    )
                    assert counted["auditDenied"] == 2  # flows, each counted once
                    # Nothing dropped in audit mode: the node's datapath counted no drop.
                    # (The policy's own denied may hold late drops of generation 1: a
                    # generation counts from about when the node took it.)
                    row = client.get(f"{THREE}/nodes").json()[0]
                    assert row["counters"]["denied"] == dropped_before
                rows = client.get(f"{THREE}/nodes").json()
                assert [row["node"] for row in rows] == [node_a.name]
                assert [r["flows"] for r in rows[0]["policyCounters"]["rules"]] == [3, 2, 3]
        finally:
            servers.close()


def summary_is_for(client: httpx.Client, path: str, generation: int) -> Callable[[], Any]:
    def check() -> Any:
        view = client.get(path).json()
        summary = view["summary"]
        return view if view["generation"] == generation and summary["enforcing"] == 1 else None

    return check
