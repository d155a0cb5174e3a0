"""Policy parts on a simulated fleet: 5,000 nodes, 100,000 endpoints, 1,000 policies.

Issue #15: a node receives only the endpoints its own endpoints' policies can select
(plus what ipBlock peers need); an endpoint change bumps only the nodes whose policies
could select it. Printed, beside what the whole-topology design did (every part carried
every endpoint; any endpoint change bumped every node with a part), in the same run:

- assignment bytes per node: the policy part as the API serialises it for the agent;
- nodes bumped per endpoint change, over a sample of changes of four kinds (a label
  selectors use, a label none uses, a new endpoint, an endpoint gone);
- the API's CPU time per change: ``policies.put_endpoints`` (checks, storing, ``sync``)
  and the commit, in this process, as a route runs it.

The fleet: 100 namespaces (labels team, env) of 10 apps of 100 pods; 20 pods per node,
placed at random. Each app has a policy: ingress from the next two apps of its
namespace on 8080, egress to a /8 on 53 (an ipBlock: it needs no endpoint); the policies
of two apps of ten also take app a0 (gateways) from the namespaces of one team
(namespaceSelector), so an a0 endpoint concerns a tenth of those policies' nodes. Rows are seeded straight into
the database, as the API would store them; the API's own code does the rest.

    .venv/bin/python bench/policy_fleet.py [--nodes 5000] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpfleet_api import db, policies
from bpfleet_api.models import Namespace, Node, NodeEndpoints, Policy

from bpfleet_core.netpol import validating
from bpfleet_core.protocol import Endpoint, EndpointSet
from tests import services

NAMESPACES, APPS, PODS_PER_NODE, TEAMS = 100, 10, 20, 10
CHANGES_PER_KIND = 10
SAMPLED_PARTS = 500  # parts measured, of nodes drawn at random


def pod_cidr(index: int) -> str:
    return f"10.{(index >> 8) & 255}.{index & 255}.0/24"


def fleet(nodes: int, seed: int = 15) -> dict[str, list[dict[str, Any]]]:
    """Endpoints per node: 20 each, of random namespaces and apps."""
    chance = random.Random(seed)
    placed: dict[str, list[dict[str, Any]]] = {}
    serial = 0
    for index in range(nodes):
        network = ipaddress.ip_network(pod_cidr(index))
        endpoints = []
        for slot in range(PODS_PER_NODE):
            namespace = f"ns-{chance.randrange(NAMESPACES):03d}"
            app = f"a{chance.randrange(APPS)}"
            serial += 1
            endpoints.append(
                Endpoint(
                    namespace=namespace,
                    name=f"{app}-{serial}",
                    labels={"app": app, "version": "v1"},
                    ip=network.network_address + 2 + slot,
                    interface=f"veth{slot}",
                    ports=[{"name": "http", "port": 8080, "protocol": "TCP"}],  # type: ignore[list-item]
                ).model_dump(mode="json", by_alias=True)
            )
        placed[f"node-{index:05d}"] = endpoints
    return placed


def policy_documents() -> list[dict[str, Any]]:
    documents = []
    for number in range(NAMESPACES):
        namespace = f"ns-{number:03d}"
        for app in range(APPS):
            document = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"namespace": namespace, "name": f"a{app}-policy"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": f"a{app}"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [
                                {"podSelector": {"matchLabels": {"app": f"a{(app + 1) % APPS}"}}},
                                {"podSelector": {"matchLabels": {"app": f"a{(app + 2) % APPS}"}}},
                            ],
                            "ports": [{"port": 8080}],
                        },
                        # Two apps of ten take the gateways (a0) of one team's namespaces.
                        *(
                            [
                                {
                                    "from": [
                                        {
                                            "namespaceSelector": {
                                                "matchLabels": {
                                                    "team": f"t{(number + app) % TEAMS}"
                                                }
                                            },
                                            "podSelector": {"matchLabels": {"app": "a0"}},
                                        }
                                    ]
                                }
                            ]
                            if app >= APPS - 2
                            else []
                        ),
                    ],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                            "ports": [{"port": 53, "protocol": "UDP"}],
                        }
                    ],
                },
            }
            documents.append(
                validating.validate(document).policy.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            )
    return documents


def seed(session: Session, placed: dict[str, list[dict[str, Any]]]) -> None:
    for index, (name, endpoints) in enumerate(placed.items()):
        session.add(Node(name=name, labels={"zone": f"z{index % 3}"}, pod_cidrs=[pod_cidr(index)]))
        session.add(NodeEndpoints(node=name, endpoints=endpoints))
    for number in range(NAMESPACES):
        name = f"ns-{number:03d}"
        session.add(
            Namespace(
                name=name,
                labels={
                    "kubernetes.io/metadata.name": name,
                    "team": f"t{number % TEAMS}",
                    "env": "prod" if number % 2 else "dev",
                },
            )
        )
    for document in policy_documents():
        metadata = document["metadata"]
        session.add(
            Policy(
                namespace=metadata["namespace"],
                name=metadata["name"],
                generation=1,
                mode="enforce",
                document=document,
            )
        )
    session.commit()


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return f"p50 {statistics.median(ordered):,.0f}, p90 {pick(0.9):,.0f}, max {ordered[-1]:,.0f}"


def changed(
    endpoints: list[dict[str, Any]], kind: str, chance: random.Random
) -> list[dict[str, Any]]:
    """One endpoint of a node changed in one way."""
    endpoints = [dict(endpoint) for endpoint in endpoints]
    at = chance.randrange(len(endpoints))
    target = endpoints[at]
    if kind == "relabel":  # a label selectors use: it moves between apps
        app = int(target["labels"]["app"][1:])
        target["labels"] = {**target["labels"], "app": f"a{(app + 1) % APPS}"}
    elif kind == "unselected label":  # a label no selector reads
        target["labels"] = {**target["labels"], "version": f"v{chance.randrange(2, 99)}"}
    elif kind == "new endpoint":
        network = ipaddress.ip_network(target["ip"] + "/24", strict=False)
        taken = {endpoint["ip"] for endpoint in endpoints}
        free = next(str(ip) for ip in network.hosts() if str(ip) not in taken)
        endpoints.append(
            {**target, "name": f"{target['name']}-new", "ip": free, "interface": "vnew"}
        )
    else:  # gone
        del endpoints[at]
    return endpoints


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgres":
        with services.postgres_server() as server:
            yield server.create_database()
        return
    with tempfile.TemporaryDirectory(prefix="bpfleet-fleet-") as work:
        yield f"sqlite:///{work}/fleet.db"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    arguments = parser.parse_args()
    placed = fleet(arguments.nodes)
    endpoints = sum(len(items) for items in placed.values())
    print(
        f"== {arguments.nodes:,} nodes, {endpoints:,} endpoints, {NAMESPACES * APPS:,} "
        f"policies ({arguments.database})"
    )
    with database(arguments.database) as url:
        engine = db.make_engine(url)
        db.migrate(engine)
        with Session(engine) as session:
            seed(session, placed)
        with Session(engine) as session:
            started, cpu = time.perf_counter(), time.process_time()
            first = policies.sync(session)
            session.commit()
            print(
                f"  first sync (the index built from nothing, every part): "
                f"{time.perf_counter() - started:.1f} s, {time.process_time() - cpu:.1f} s CPU; "
                f"{len(first.nodes):,} nodes with a part"
            )
        with Session(engine) as session:
            sizes, serve_ms = [], []
            for name in random.Random(3).sample(list(placed), min(SAMPLED_PARTS, len(placed))):
                started = time.process_time()
                part = policies.part_of(session, name)
                if part is not None:
                    sizes.append(len(part.model_dump_json(by_alias=True)))
                    serve_ms.append((time.process_time() - started) * 1000)
            started = time.process_time()
            whole = policies.fleet_topology(session).model_dump_json(by_alias=True)
            whole_ms = (time.process_time() - started) * 1000
        print(
            f"  assignment bytes per node (policy part; {len(sizes)} nodes drawn at random): "
            f"{quantiles(sizes)}"
        )
        print(f"    API CPU ms to assemble and serialise one: {quantiles(serve_ms)}")
        print(
            f"    before: the whole topology in every part, {len(whole):,} bytes (+ the "
            f"node's policies) to each of {len(first.nodes):,} nodes; building and serialising "
            f"it once took {whole_ms:,.0f} ms CPU (each sync built and digested it)"
        )
        chance = random.Random(7)
        names = list(placed)
        for kind in ("relabel", "unselected label", "new endpoint", "gone"):
            bumped, cpu_ms = [], []
            for _ in range(CHANGES_PER_KIND):
                node = chance.choice(names)
                declared = EndpointSet.model_validate(
                    {"endpoints": changed(placed[node], kind, chance)}
                )
                with Session(engine) as session:
                    started = time.process_time()
                    changes = policies.put_endpoints(session, node, declared, limit=1000)
                    session.commit()
                    cpu_ms.append((time.process_time() - started) * 1000)
                placed[node] = [
                    e.model_dump(mode="json", by_alias=True) for e in declared.endpoints
                ]
                bumped.append(len(changes.nodes))
            print(
                f"  {kind:<17} nodes bumped {quantiles(bumped)} (before: every node with "
                f"a part, {len(first.nodes):,}); API CPU ms {quantiles(cpu_ms)}"
            )


if __name__ == "__main__":
    main()
