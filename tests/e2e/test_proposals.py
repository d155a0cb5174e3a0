"""A proposal reaches the kernel: `shop/db-ingress` changed so that web may no longer reach
db, proposed through the API (never written to the fleet), pushed by the standalone
operator as a branch of the local repository, merged (dev), applied; within 30 s the
policy's generation bumps, the node enforces it, and a real TCP connection web -> db
fails. Pods and nodes as in ``test_policies``:

    node A (netns): agent, pod shop/db (10.213.1.2)
    node B (netns): agent, pods shop/web (10.213.2.2) and shop/other (10.213.2.3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfleet_agent import lab
from bpfleet_cli.localfleet import Bridge, local_fleet
from tests import services
from tests.conftest import SignedCatalog
from tests.e2e.conftest import uploaded
from tests.e2e.test_policies import (
    DB,
    EVERY_PAIR,
    OTHER,
    PATH,
    PORT,
    WEB,
    allowed,
    db_policy,
    declare,
    endpoint,
    pods,
    recorded_features,
    summary_is,
)
from tests.gitrepos import GitRepo
from tests.operator.processes import BPFLEET, operator_environment, running
from tests.polling import wait_for

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.services,
    pytest.mark.parametrize("api", ["postgres"], indirect=True),  # tests/api covers both
]


def source(repo: GitRepo) -> dict[str, Any]:
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {
            "url": f"file://{repo.path}",
            "path": "policies",
            "interval": "1h",  # a pass at the start, then only when the merge wakes it
            "proposals": {"devMerge": True},
        },
    }


def test_a_proposal_merged_in_the_local_fleet_is_enforced_by_the_kernel(
    api: services.Api, network: Bridge, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    uploaded(api, signed_catalog, "netpol")
    repo = GitRepo(tmp_path / "repo")
    repo.commit("db: web only", {"policies/db-ingress.yaml": yaml.safe_dump(db_policy("web"))})
    (tmp_path / "gitsource.yaml").write_text(yaml.safe_dump(source(repo)))
    features = recorded_features()
    with api.client() as admin:
        minted = admin.post("/v1/tokens", json={"name": "sec-eng", "role": "proposer"})
        proposer = str(minted.json()["token"])
    with (
        local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=signed_catalog.trust,
            work=tmp_path / "agents",
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
        running(
            [BPFLEET, "operator", "standalone", str(tmp_path / "gitsource.yaml")],
            operator_environment(api, tmp_path / "operator", 0),
            tmp_path / "operator.log",
        ),
        api.client() as client,
        api.client(proposer) as as_proposer,
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
            # Git -> the fleet: generation 1 lets web (and only web) reach db.
            first = summary_is(client, 1, enforcing=1)
            wait_for(
                lambda: client.get(PATH).status_code == 200 and first(),
                120,
                "generation 1 from Git enforced",
            )
            assert allowed(everything) == EVERY_PAIR - {(OTHER, DB)}
            applied = client.get("/v1/gitsources/default/fleet").json()["lastAppliedRevision"]

            # The editor's save: a proposal, only other may reach db.
            body = {
                "source": {"namespace": "default", "name": "fleet"},
                "files": [
                    {
                        "path": "policies/db-ingress.yaml",
                        "content": yaml.safe_dump(db_policy("other")),
                        "baseRevision": applied,
                    },
                    {
                        "path": "policies/db-ingress.flows.yaml",
                        "content": "flows:\n  - shop/web -> shop/db TCP/pg expect deny\n",
                    },
                ],
                "message": "db-ingress: other only; web goes through the API",
            }
            created = as_proposer.post("/v1/proposals", json=body)
            assert created.status_code == 201, created.text
            card = created.json()

            def stage(*wanted: str) -> Any:
                def check() -> dict[str, Any] | None:
                    found = as_proposer.get(f"/v1/proposals/{card['id']}").json()
                    return found if found["stage"] in wanted else None

                return check

            pushed = wait_for(stage("Pushed"), 60, "the proposal pushed")
            assert repo.git("rev-list", f"main..{pushed['branch']}").split() == [pushed["commit"]]
            assert repo.git("log", "-1", "--format=%an", pushed["branch"]) == "sec-eng"
            # Proposed and pushed: nothing changed in the fleet or on the wire yet.
            assert client.get(PATH).json()["generation"] == 1
            assert (WEB, DB) in allowed(everything)

            assert as_proposer.post(f"/v1/proposals/{card['id']}/merge").status_code == 202
            wait_for(summary_is(client, 2, enforcing=1), 30, "generation 2 enforced on node A")
            rows = client.get(f"{PATH}/nodes").json()
            assert [(r["node"], r["generation"], r["state"]) for r in rows] == [
                (node_a.name, 2, "Enforcing")
            ]
            done = wait_for(stage("Enforcing"), 30, "the card at Enforcing")
            assert (done["ready"], done["desired"]) == (1, 1)
            assert done["revision"] == f"main@sha1:{repo.head()}"
            for moment in ("pushedAt", "mergedAt", "appliedAt", "enforcedAt"):
                assert done[moment] is not None, moment
            # The kernel says so: web -> db is refused now, other -> db goes through.
            assert allowed(everything) == EVERY_PAIR - {(WEB, DB)}
        finally:
            servers.close()
