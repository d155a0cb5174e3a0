"""Saving in the editor is a proposal, in a real browser against the real fleet: the
Propose dialog (what the API previews: files, default branch, the simulator's message),
the card following a proposal from Proposed to Enforcing with a dev merge, a stale base
pushing nothing and showing three texts, and an audit policy promoted by a proposal of
its own. End to end: `shop/db-ingress` changed so that web may no longer reach db,
proposed, merged; the kernel refuses a real TCP connection web -> db, and the flow test
committed with it passes in `bpfleet validate`. And the same flow with the kopf
operator (against the Kubernetes emulator) as the Git writer of a GitSource of its own.

Real pods (network namespaces behind the nodes, echo servers on 5432): shop/web and
shop/other behind node 0, shop/db behind node 2. They replace the endpoints the editor's
tests declared on those nodes. Each page is checked by ``Visitor`` and saved as a
screenshot; the editor never writes a policy or a program (``no_writes``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, expect

from bpfleet_agent import lab
from tests.e2e.test_policies import pods
from tests.gitrepos import GitRepo
from tests.operator.kubernetes import emulated_cluster, git_source
from tests.operator.processes import BPFLEET, operator
from tests.polling import wait_for
from tests.ui.conftest import Dashboard, visitor
from tests.ui.test_editor import no_writes, set_text, yaml_text

pytestmark = [pytest.mark.ui, pytest.mark.bpf, pytest.mark.services]

PORT = 5432
WEB, OTHER, DB = "shop/web", "shop/other", "shop/db"
FILE = "programs/db-ingress.yaml"
FLOWS_FILE = "programs/db-ingress.flows.yaml"
POLICY = "/v1/policies/shop/db-ingress"
WEB_ONLY = """\
# The database: who may connect.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}   # the shop's front end
    ports: [{port: 5432}]
"""
OTHER_ONLY = WEB_ONLY.replace(
    "{app: web}}   # the shop's front end", "{app: other}}   # web goes through the API now"
)
FLOWS = """\
flows:
  - shop/web -> shop/db TCP/pg expect deny
  - shop/other -> shop/db TCP/5432 expect allow
"""


@dataclass
class Lab:
    fleet: Dashboard
    pods: dict[str, lab.LabPod]

    def allowed(self) -> set[tuple[str, str]]:
        """Real TCP, every ordered pair: the ones whose echo came back."""
        matrix = lab.probe_matrix(self.pods, "TCP", PORT, timeout=1.5)
        return {(c, s) for c, row in matrix.items() for s, ok in row.items() if ok and c != s}


def endpoint(name: str, pod: lab.LabPod) -> dict[str, Any]:
    return {
        "namespace": "shop",
        "name": name,
        "labels": {"app": name},
        "ip": str(pod.address),
        "interface": pod.host_interface,
        "ports": [{"name": "pg", "port": PORT, "protocol": "TCP"}],
    }


def reconcile(client: httpx.Client) -> None:
    assert client.post("/v1/gitsources/default/fleet/reconcile").status_code in (200, 202)


def enforced(client: httpx.Client, path: str, generation: int | None = None) -> Any:
    def check() -> Any:
        found = client.get(path)
        if found.status_code != 200:
            return None
        view = found.json()
        summary = view["summary"]
        if generation is not None and view["generation"] != generation:
            return None
        return view if summary["desired"] == summary["enforcing"] == 1 else None

    return check


def topology_has(client: httpx.Client, pods: dict[str, lab.LabPod]) -> bool:
    wanted = {(name, str(pod.address)) for name, pod in pods.items()}
    found = client.get("/v1/topology", params={"limit": 500}).json()["endpoints"]
    return wanted <= {(f"{e['namespace']}/{e['name']}", e["ip"]) for e in found}


@pytest.fixture(scope="module")
def shop_lab(dashboard: Dashboard) -> Iterator[Lab]:
    """Pods web and other behind node 0, db behind node 2, each serving TCP 5432; and
    `shop/db-ingress` (web only) committed to Git and enforced."""
    web_node, db_node = dashboard.node(0), dashboard.node(2)
    web_net, db_net = web_node.pod_cidr.rsplit(".", 1)[0], db_node.pod_cidr.rsplit(".", 1)[0]
    try:
        with (
            pods(
                web_node,
                db_node,
                {WEB: (f"{web_net}.40", "vpweb"), OTHER: (f"{web_net}.41", "vpother")},
                db_node.pod_cidr,
            ) as front,
            pods(db_node, web_node, {DB: (f"{db_net}.40", "vpdb")}, web_node.pod_cidr) as back,
            dashboard.client() as client,
        ):
            everything = {**front, **back}
            shop = Lab(dashboard, everything)
            servers = lab.Servers(list(everything.values()), ports=(PORT,))
            try:
                client.delete(POLICY)  # the editor's tests set one through the API
                wait_for(lambda: client.get(POLICY).status_code == 404, 60, "no API policy")
                for node, names in ((web_node, (WEB, OTHER)), (db_node, (DB,))):
                    declared = [endpoint(name.split("/")[1], everything[name]) for name in names]
                    (node.state_dir / "endpoints.yaml").write_text(
                        yaml.safe_dump({"endpoints": declared})
                    )
                wait_for(lambda: topology_has(client, everything), 60, "the pods as endpoints")
                dashboard.repo.commit("db: web only", {FILE: WEB_ONLY})
                reconcile(client)
                wait_for(enforced(client, POLICY), 60, "db-ingress from Git enforced on db's node")
                # The wire agrees: web may reach db, other may not.
                wait_for(
                    lambda: (WEB, DB) in shop.allowed() and (OTHER, DB) not in shop.allowed(),
                    30,
                    "web (only) reaching db over TCP",
                )
                yield shop
            finally:
                servers.close()
                for node in (web_node, db_node):
                    (node.state_dir / "endpoints.yaml").write_text("endpoints: []\n")
    finally:
        present = [p for p in (FILE, FLOWS_FILE) if (dashboard.repo.path / p).exists()]
        if present:
            dashboard.repo.commit("db-ingress goes", remove=tuple(present))
        with dashboard.client() as client:
            reconcile(client)
            wait_for(lambda: client.get(POLICY).status_code == 404, 60, "db-ingress pruned")


def dialog_of(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Propose as a Git commit")


def card_of(scope: Locator | Page) -> Locator:
    return scope.get_by_role("article", name=re.compile(r"^Proposal \d+$"))


def newest_proposal(fleet: Dashboard, policy: str) -> dict[str, Any]:
    with fleet.client() as client:
        found = client.get("/v1/proposals", params={"policy": policy, "limit": 1})
    return dict(found.json()[0])


def test_a_draft_proposed_and_merged_in_the_browser_reaches_the_kernel(
    browser: Browser, shop_lab: Lab, tmp_path: Path
) -> None:
    fleet = shop_lab.fleet
    repo = fleet.repo
    db_node = fleet.node(2).name
    with fleet.client() as client:
        before = client.get(POLICY).json()["generation"]
    applied = repo.head()
    with visitor(browser, fleet, "propose-e2e", token=fleet.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress&port=5432&tab=flows")
        expect(page.get_by_test_id("opened-from")).to_contain_text(
            f"{FILE} in GitSource default/fleet @ {applied[:7]} (applied)"
        )
        set_text(page, OTHER_ONLY)
        page.get_by_role("textbox", name=re.compile("Flow tests")).fill(FLOWS)
        expect(page.get_by_test_id("flow-summary")).to_have_text("2 passed, 0 failed")

        # G1: the dialog says what goes where, as the API previews it.
        page.get_by_role("button", name="Propose…").click()
        dialog = dialog_of(page)
        expect(dialog.get_by_label("Branch")).to_have_attribute(
            "placeholder", "bpfleet/shop-db-ingress-<id>"
        )
        expect(dialog.get_by_role("list", name="Files proposed")).to_have_text(
            re.compile(f"{re.escape(FILE)}\\s*{re.escape(FLOWS_FILE)}")
        )
        message = dialog.get_by_label(re.compile("^Message"))
        expect(message).to_have_value(
            re.compile(r"^shop/db-ingress: \+1 allowed, -1 denied on TCP/5432\n")
        )
        written = message.input_value()
        assert "  - newly denied: shop/web -> shop/db" in written
        assert "Flow tests: 2 passed, 0 failed." in written
        person.check("propose-dialog")
        dialog.get_by_role("button", name="Propose", exact=True).click()

        # G5: the card follows it. Pushed: a branch with exactly one commit, both files.
        card = card_of(dialog)
        expect(card).to_contain_text(re.compile(r"Pushed.*bpfleet/shop-db-ingress-\d+ at"))
        proposal = newest_proposal(fleet, "shop/db-ingress")
        branch, commit = proposal["branch"], proposal["commit"]
        assert branch == f"bpfleet/shop-db-ingress-{proposal['id']}"
        assert repo.git("rev-list", f"main..{branch}").split() == [commit]
        touched = repo.git("show", "--name-only", "--format=", commit).split()
        assert sorted(touched) == [FLOWS_FILE, FILE]
        assert repo.git("log", "-1", "--format=%an", commit) == "dev-proposer"
        # G4: the pull request on the forge, its description the dialog's message.
        pull = proposal["pullRequest"]
        assert pull["forge"] == "gitea"
        shown = card.get_by_test_id("pull-request")
        expect(shown).to_contain_text(f"Pull request #{pull['number']} on gitea")
        expect(shown).to_contain_text("(open)")
        expect(shown.get_by_role("link", name=pull["url"])).to_have_attribute("href", pull["url"])
        sent = fleet.forge.requests[-1]
        assert sent.path == "/api/v1/repos/shop/fleet/pulls"
        assert sent.body["title"] == written.splitlines()[0]
        assert "  - newly denied: shop/web -> shop/db" in sent.body["body"]
        # Nothing reached the fleet yet.
        with fleet.client() as client:
            assert client.get(POLICY).json()["generation"] == before
        person.check("propose-pushed")

        # G4/G6: the local repository allows a dev merge; within 30 s the generation
        # bumps and the node enforces it.
        card.get_by_role("button", name="Merge (dev)").click()
        with fleet.client() as client:
            wait_for(enforced(client, POLICY, before + 1), 30, "the merge enforced on db's node")
        expect(card).to_contain_text(re.compile(r"Merged.*[0-9a-f]{7}"))
        expect(card).to_contain_text(re.compile(r"Applied.*[0-9a-f]{7}"))
        expect(card).to_contain_text(
            re.compile(r"Enforcing \d{4}-\d\d-\d\d [\d:]+ UTC\s*1/1 nodes")
        )
        expect(card.locator("h3 [data-state]")).to_have_text(re.compile("Enforcing"))
        expect(card.get_by_test_id("pull-request")).to_contain_text("(merged)")
        person.check("propose-enforcing")
        dialog.get_by_role("button", name="Close").click()

        person.go("/policies/shop/db-ingress")
        expect(page.locator("dl.facts")).to_contain_text(f"Generation{before + 1}")
        row = page.locator("tbody tr", has_text=db_node)
        expect(row).to_contain_text(str(before + 1))
        expect(row.locator("[data-state]")).to_have_text(re.compile("Enforcing"))
        expect(card_of(page).first).to_contain_text("Enforcing")
        person.check("policy-after-merge")
        no_writes(person)

    # The kernel: web -> db is refused now, other -> db goes through.
    allowed = shop_lab.allowed()
    assert (WEB, DB) not in allowed
    assert (OTHER, DB) in allowed
    # CI checks what the editor showed: the committed flow tests pass on the fleet.
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(checkout)], check=True)
    assert (checkout / FLOWS_FILE).read_text() == FLOWS
    validated = subprocess.run(
        [BPFLEET, "validate", str(checkout / "programs"), "--api-url", fleet.origin],
        env={"BPFLEET_TOKEN": fleet.api.admin_token, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "2 flow test(s) passed in 1 file(s)" in validated.stdout


def test_a_file_changed_since_it_was_opened_pushes_nothing_and_shows_three_texts(
    browser: Browser, shop_lab: Lab
) -> None:
    fleet = shop_lab.fleet
    repo = fleet.repo
    branches = repo.git("branch", "--list", "bpfleet/*")
    pulls = len(fleet.forge.requests)
    with visitor(browser, fleet, "propose-conflict", token=fleet.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress")
        expect(page.get_by_test_id("opened-from")).to_contain_text("(applied)")
        opened = yaml_text(page)
        # Meanwhile someone changes the file on the tracked branch (not applied yet).
        current = (repo.path / FILE).read_text()
        repo.commit("db-ingress: reviewed", {FILE: "# reviewed by the DBAs\n" + current})
        set_text(page, opened.replace("port: 5432", "port: 5433"))
        page.get_by_role("button", name="Propose…").click()
        dialog = dialog_of(page)
        expect(dialog.get_by_role("button", name="Propose", exact=True)).to_be_enabled()
        dialog.get_by_role("button", name="Propose", exact=True).click()
        expect(card_of(dialog).locator("h3 [data-state]")).to_have_text(re.compile("Conflict"))
        expect(dialog.get_by_role("alert")).to_contain_text("Nothing was pushed")
        three = dialog.get_by_test_id("three-way")
        expect(three.get_by_role("region")).to_have_count(3)
        expect(three.get_by_role("region", name=re.compile("^Theirs"))).to_contain_text(
            "reviewed by the DBAs"
        )
        expect(three.get_by_role("region", name=re.compile("^Ours"))).to_contain_text("5433")
        expect(three.get_by_role("region", name=re.compile("^Base"))).not_to_contain_text(
            "reviewed by the DBAs"
        )
        person.check("propose-conflict")
        no_writes(person)
    assert repo.git("branch", "--list", "bpfleet/*") == branches  # nothing pushed
    assert len(fleet.forge.requests) == pulls  # and no pull request
    repo.commit("db-ingress: as applied", {FILE: current})


def test_an_audit_policys_counts_per_node_and_its_promotion_proposed(
    browser: Browser, shop_lab: Lab
) -> None:
    fleet = shop_lab.fleet
    repo = fleet.repo
    path = "/v1/policies/shop/web-audit"
    audit = """\
# Who would be refused if web admitted nobody: watch before enforcing.
apiVersion: bpfleet.io/v1alpha1
kind: NetworkPolicy
metadata: {name: web-audit, namespace: shop}
spec:
  mode: audit
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"""
    web_node = fleet.node(0).name
    # No other policy selects web: what this one would refuse is only counted.
    repo.commit("web: audit who connects", {"programs/web-audit.yaml": audit})
    with fleet.client() as client:
        reconcile(client)
        wait_for(enforced(client, path), 60, "web-audit enforced (in audit) on web's node")

        def audit_denied() -> bool:
            assert (DB, WEB) in shop_lab.allowed()  # real connections, let through
            rows = client.get(f"{path}/nodes").json()
            return any((row["counters"] or {}).get("auditDenied", 0) > 0 for row in rows)

        wait_for(audit_denied, 90, "audit-denied flows counted on web's node")
    try:
        with visitor(browser, fleet, "propose-promote", token=fleet.proposer_token) as person:
            page = person.page
            person.go("/policies/shop/web-audit")
            expect(page.locator("dl.facts")).to_contain_text("audit")
            row = page.locator("tbody tr", has_text=web_node)
            header = page.locator("thead th").all_inner_texts()
            counted = row.locator("td").nth(header.index("Audit-denied"))
            expect(counted).to_have_text(re.compile(r"^[1-9][\d,]*$"))
            expect(page.get_by_text("No proposal of this policy yet.")).to_be_visible()
            person.check("audit-policy")

            page.get_by_role("link", name="Promote to enforce…").click()
            expect(page.locator(".cm-content")).to_contain_text("mode: enforce")
            page.get_by_role("button", name="Propose…").click()
            dialog = dialog_of(page)
            expect(dialog.get_by_label(re.compile("^Message"))).to_have_value(
                re.compile(r"^shop/web-audit: ")
            )
            dialog.get_by_role("button", name="Propose", exact=True).click()
            expect(card_of(dialog)).to_contain_text(re.compile(r"Pushed.*bpfleet/shop-web-audit-"))
            dialog.get_by_role("button", name="Close").click()

            person.go("/policies/shop/web-audit")
            card = card_of(page)
            expect(card).to_have_count(1)
            expect(card).to_contain_text("Pushed")
            expect(card.get_by_role("button", name="Merge (dev)")).to_be_visible()
            person.check("audit-promotion-proposed")
            no_writes(person)
        proposal = newest_proposal(fleet, "shop/web-audit")
        [change] = [
            c for c in proposal_files(fleet, proposal["id"]) if c["path"].endswith("audit.yaml")
        ]
        assert "mode: enforce" in change["content"]
        assert "# Who would be refused" in change["content"]  # the comment kept
    finally:
        repo.commit("web-audit goes", remove=("programs/web-audit.yaml",))
        with fleet.client() as client:
            reconcile(client)
            wait_for(lambda: client.get(path).status_code == 404, 60, "web-audit pruned")


def proposal_files(fleet: Dashboard, proposal: int) -> list[dict[str, Any]]:
    with fleet.client() as client:
        return list(client.get(f"/v1/proposals/{proposal}").json()["changes"])


CACHE_FILE = "policies/cache-ingress.yaml"
CACHE = "/v1/policies/shop/cache-ingress"
# Selects no endpoint of the shared fleet: applying it changes no node's datapath.
CACHE_FROM_WEB = """\
# The cache: who may connect.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cache-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: cache}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 6379}]
"""
CACHE_FROM_OTHER = CACHE_FROM_WEB.replace("{app: web}}", "{app: other}}   # web reads db now")


def test_the_kopf_operator_pushes_and_merges_a_proposal_made_in_the_browser(
    browser: Browser, dashboard: Dashboard, tmp_path: Path
) -> None:
    """The same dialog and card, with the kopf operator (against the Kubernetes
    emulator) as the Git writer for a GitSource of its own, beside the fleet's
    standalone one: each operator takes only its own sources' proposals."""
    repo = GitRepo(tmp_path / "team-repo")
    opened = repo.commit("cache: web only", {CACHE_FILE: CACHE_FROM_WEB})
    source = git_source(
        "team", "default", str(repo.path), path="policies", proposals={"devMerge": True}
    )
    with emulated_cluster() as cluster, operator(dashboard.api, cluster.url, tmp_path):
        cluster.create("gitsources", source, namespace="default")
        try:
            with dashboard.client() as client:
                wait_for(lambda: client.get(CACHE).status_code == 200, 60, "the kopf pass")
                before = client.get(CACHE).json()["generation"]
            with visitor(
                browser, dashboard, "propose-kopf", token=dashboard.proposer_token
            ) as person:
                page = person.page
                person.go("/editor?policy=shop%2Fcache-ingress")
                expect(page.get_by_test_id("opened-from")).to_contain_text(
                    f"{CACHE_FILE} in GitSource default/team @ {opened[:7]} (applied)"
                )
                set_text(page, CACHE_FROM_OTHER)
                page.get_by_role("button", name="Propose…").click()
                dialog = dialog_of(page)
                expect(dialog.get_by_role("list", name="Files proposed")).to_have_text(CACHE_FILE)
                expect(dialog.get_by_label(re.compile("^Message"))).to_have_value(
                    re.compile(r"^shop/cache-ingress: ")
                )
                dialog.get_by_role("button", name="Propose", exact=True).click()

                card = card_of(dialog)
                expect(card).to_contain_text(
                    re.compile(r"Pushed.*bpfleet/shop-cache-ingress-\d+ at"), timeout=30_000
                )
                proposal = newest_proposal(dashboard, "shop/cache-ingress")
                assert proposal["source"] == {"namespace": "default", "name": "team"}
                expect(card).to_contain_text("(to GitSource default/team)")
                branch, commit = proposal["branch"], proposal["commit"]
                assert branch == f"bpfleet/shop-cache-ingress-{proposal['id']}"
                assert proposal["canMerge"] is True
                expect(card).to_contain_text(f"{branch} at {commit[:7]}")
                assert repo.git("rev-list", f"main..{branch}").split() == [commit]
                assert repo.git("show", "--name-only", "--format=", commit).split() == [CACHE_FILE]
                assert repo.git("show", f"{commit}:{CACHE_FILE}") == CACHE_FROM_OTHER.rstrip("\n")
                assert repo.git("log", "-1", "--format=%an", commit) == "dev-proposer"
                with dashboard.client() as client:  # nothing reached the fleet yet
                    assert client.get(CACHE).json()["generation"] == before
                person.check("kopf-pushed")

                card.get_by_role("button", name="Merge (dev)").click()
                expect(card).to_contain_text(re.compile(r"Merged.*[0-9a-f]{7}"), timeout=30_000)
                expect(card).to_contain_text(re.compile(r"Applied.*[0-9a-f]{7}"), timeout=30_000)
                merged = repo.head()
                assert merged != opened
                assert repo.git("show", f"{merged}:{CACHE_FILE}") == CACHE_FROM_OTHER.rstrip("\n")
                expect(card).to_contain_text(
                    re.compile(f"Merged.*{merged[:7]}.*Applied.*{merged[:7]}")
                )
                live = cluster.get("networkpolicies", "cache-ingress", "shop")
                assert live is not None
                assert live["spec"]["ingress"][0]["from"][0]["podSelector"] == {
                    "matchLabels": {"app": "other"}
                }
                assert live["metadata"]["annotations"]["bpfleet.io/revision"] == (
                    f"main@sha1:{merged}"
                )
                with dashboard.client() as client:  # through the cluster's object, by kopf
                    wait_for(
                        lambda: client.get(CACHE).json()["generation"] == before + 1,
                        30,
                        "the merged policy in the fleet",
                    )
                person.check("kopf-merged")
                no_writes(person)
        finally:
            # Deleting the source prunes what it applied (the policy, in the cluster and
            # in the fleet) and makes the fleet forget it.
            cluster.delete("gitsources", "team", "default")
            with dashboard.client() as client:
                wait_for(lambda: client.get(CACHE).status_code == 404, 30, "cache-ingress pruned")
                wait_for(
                    lambda: client.get("/v1/gitsources/default/team").status_code == 404,
                    30,
                    "the team source forgotten",
                )
