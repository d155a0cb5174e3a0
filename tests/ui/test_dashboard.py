"""The dashboard in a real browser against the real fleet: every view, its content, its
URL state, live updates, roles, and the actions that reach the agents.

Each test visits its pages through ``Visitor`` (see conftest): axe, keyboard, no state
by colour alone, no console error, no other origin, a screenshot per page.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, expect

from tests.polling import wait_for
from tests.ui.conftest import Dashboard, endpoint_veth, unique, visitor

pytestmark = [pytest.mark.ui, pytest.mark.bpf, pytest.mark.services]

# A 401 is how the page learns nobody is signed in; Chromium logs it as an error.
SESSION_401 = re.compile(r"status of 401 .*/v1/session\)$")
ABORTED = re.compile(r"net::ERR_FAILED")


def put_program(client: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.put(f"/v1/programs/{name}", json=spec)
    assert response.status_code == 200, response.text
    return dict(response.json())


def syscount(**extra: Any) -> dict[str, Any]:
    return {
        "artifact": {"name": "syscount", "version": "1.0.0"},
        "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
        **extra,
    }


def test_sign_in_sign_out_and_a_401_leads_to_sign_in(
    browser: Browser, dashboard: Dashboard
) -> None:
    with visitor(browser, dashboard, "sign-in") as person:
        person.allowed_console = [SESSION_401]
        person.go("/nodes?selector=tier%3Dedge")
        expect(person.page.get_by_role("heading", name="Sign in to bpfleet")).to_be_visible()
        assert person.url() == "/ui/sign-in?next=%2Fnodes%3Fselector%3Dtier%253Dedge"
        person.check("sign-in")
        person.page.get_by_label("Token").fill("bpf_not-a-token")
        person.page.get_by_role("button", name="Sign in").click()
        expect(person.page.get_by_role("alert")).to_contain_text("unknown, expired or revoked")
        person.page.get_by_label("Token").fill(dashboard.api.admin_token)
        person.page.get_by_role("button", name="Sign in").click()
        # Back where the person was going, with the filter it had.
        expect(person.page.get_by_role("heading", name="Nodes")).to_be_visible()
        assert person.url() == "/ui/nodes?selector=tier%3Dedge"
        expect(person.page.get_by_text("admin (admin)")).to_be_visible()
        cookies = person.page.context.cookies()
        session = next(c for c in cookies if c["name"] == "bpfleet_session")
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"
        assert dashboard.api.admin_token not in str(cookies)

        person.page.get_by_role("button", name="Sign out").click()
        expect(person.page.get_by_role("heading", name="Sign in to bpfleet")).to_be_visible()
        assert not any(c["name"] == "bpfleet_session" for c in person.page.context.cookies())
        person.go("/programs")
        expect(person.page.get_by_role("heading", name="Sign in to bpfleet")).to_be_visible()
        headers = httpx.get(f"{dashboard.origin}/ui/").headers
        assert "default-src 'self'" in headers["content-security-policy"]


def test_overview_nodes_and_view_state_in_the_url(browser: Browser, dashboard: Dashboard) -> None:
    with visitor(browser, dashboard, "overview-nodes", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go("/")
        sync = page.get_by_role("article", name="GitSource default/fleet")
        expect(sync).to_contain_text(
            re.compile(r"Git → fleet: applied [0-9a-f]{7}, \d+ (s|min) ago")
        )
        expect(sync).to_contain_text(re.compile(r"fleet → nodes: \d+/\d+ attached or enforcing"))
        nodes_card = page.get_by_role("region", name="Nodes")
        expect(nodes_card.get_by_role("link", name=re.compile(r"Ready 3"))).to_be_visible()
        expect(page.get_by_test_id("freshness")).to_contain_text(re.compile(r"Updated \d+ s ago"))
        person.check("overview")

        # Each count opens its list, filtered; the filter is in the URL.
        nodes_card.get_by_role("link", name=re.compile(r"Ready 3")).click()
        expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
        assert person.url() == "/ui/nodes?readiness=Ready"
        expect(page.locator("tbody tr")).to_have_count(3)
        person.check("nodes-ready")

        page.get_by_label("Label selector").fill("tier=edge")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("tbody tr")).to_have_count(2)
        assert "selector=tier%3Dedge" in person.url()
        page.get_by_role("button", name=re.compile("^Name")).click()  # ascending -> descending
        expect(page.locator("tbody tr").first).to_contain_text(dashboard.node(1).name)
        assert "sort=-name" in person.url()
        page.reload()
        expect(page.locator("tbody tr")).to_have_count(2)
        expect(page.locator("tbody tr").first).to_contain_text(dashboard.node(1).name)
        expect(page.get_by_label("Label selector")).to_have_value("tier=edge")
        page.go_back()
        expect(page.locator("tbody tr").first).to_contain_text(dashboard.node(0).name)
        assert "sort" not in person.url()
        person.check("nodes-edge")

        page.get_by_label("Label selector").fill("tier=edge,=x")
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("alert")).to_contain_text("cannot parse from column 11")
        person.allowed_console = [re.compile(r"status of 422")]

        person.go(f"/nodes/{dashboard.node(2).name}?tab=features")
        expect(page.get_by_role("region", name="Map types")).to_contain_text(
            re.compile(r"Missing:.*ringbuf")
        )
        expect(page.get_by_role("region", name="Helpers per program type")).to_contain_text(
            "helpers"
        )
        expect(page.get_by_role("tab", name="Kernel features")).to_have_attribute(
            "aria-selected", "true"
        )
        person.check("node-features")


def test_a_rollout_steps_on_real_agents_and_an_admin_pauses_it(
    browser: Browser, dashboard: Dashboard
) -> None:
    name = unique("execs")
    with dashboard.client() as client:
        put_program(
            client,
            name,
            {
                "artifact": {"name": "execsnoop", "version": "1.0.0"},
                "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
                "rollout": {"steps": ["1", "2", "100%"], "bakeSeconds": 6},
            },
        )
    with visitor(browser, dashboard, "rollout", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go(f"/programs/{name}")
        steps = page.locator("ol.steps li")
        expect(steps).to_have_count(3)
        expect(steps.nth(0)).to_contain_text("Step 1 of 3: 1, 1 of 3 nodes")
        expect(page.get_by_test_id("bake")).to_contain_text(
            re.compile(r"the next step starts in \d+ s"), timeout=60_000
        )
        expect(
            page.get_by_text(re.compile(r"Failure budget: 0 failed of 0 allowed"))
        ).to_be_visible()
        expect(page.get_by_text("Incompatible nodes do not count", exact=False)).to_be_visible()
        person.check("program-baking")
        page.get_by_role("button", name="Pause").click()
        heading = page.get_by_role("heading", name=re.compile("Rollout to generation 1"))
        expect(heading).to_contain_text("Paused")
        with dashboard.client() as client:
            assert client.get(f"/v1/programs/{name}").json()["rollout"]["phase"] == "Paused"
        person.check("program-paused")
        page.get_by_role("button", name="Resume").click()
        expect(heading).to_contain_text("Succeeded", timeout=90_000)
        for index in range(3):
            expect(steps.nth(index)).to_contain_text("done")
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(3)
        incompatible = page.locator("tbody tr", has_text=dashboard.node(2).name)
        expect(incompatible).to_contain_text("Incompatible")
        expect(incompatible).to_contain_text("kernel lacks map type ringbuf")
        for index in (0, 1):
            expect(page.locator("tbody tr", has_text=dashboard.node(index).name)).to_contain_text(
                "Attached"
            )
        assert dashboard.node(0).program_state(name) == "Attached"
        person.check("program-succeeded")

        page.get_by_role("tab", name="Events").click()
        expect(page.locator("ol.timeline")).to_contain_text("RolloutSucceeded")
        expect(page.locator("ol.timeline")).to_contain_text("RolloutPaused")
        assert "tab=events" in person.url()
        person.check("program-events")

        person.go("/programs")
        row = page.locator("tbody tr", has_text=name)
        expect(row).to_contain_text("2 attached, 1 incompatible of 3")
        expect(row).to_contain_text("set through the API")
        expect(row).to_contain_text("execsnoop@1.0.0")
        syscalls = page.locator("tbody tr", has_text="syscalls")
        expect(syscalls).to_contain_text(re.compile(r"GitSource default/fleet @ [0-9a-f]{7}"))
        person.check("programs")


def test_a_load_failed_row_opens_to_its_verifier_log(
    browser: Browser, dashboard: Dashboard
) -> None:
    name = unique("unchecked")
    with dashboard.client() as client:
        put_program(
            client,
            name,
            {
                "artifact": {"name": "unchecked", "version": "1.0.0"},
                "attach": [{"entryPoint": "count_unchecked", "type": "raw_tracepoint"}],
                "nodeSelector": {"matchLabels": {"zone": "a"}},
            },
        )
    node = dashboard.node(0).name
    with visitor(browser, dashboard, "load-failed", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go(f"/programs/{name}")
        row = page.locator("tbody tr", has_text=node)
        expect(row).to_contain_text("LoadFailed", timeout=60_000)
        expect(page.locator("pre.log")).to_have_count(0)
        row.get_by_role("button", name="Show the verifier log").click()
        log = page.locator("pre.log")
        expect(log).to_contain_text("invalid mem access")
        assert f"open={node}" in person.url()
        page.reload()  # the open row is in the URL
        expect(page.locator("pre.log")).to_contain_text("invalid mem access")
        person.check("program-load-failed")
        person.go(f"/nodes/{node}")
        expect(page.locator("tbody tr", has_text=name)).to_contain_text("LoadFailed")
        person.check("node-programs")


def test_the_kernel_view_names_what_each_node_lacks(browser: Browser, dashboard: Dashboard) -> None:
    # Node 2's cached feature report says its kernel has no ring buffers; execsnoop
    # streams through one. (fentry and kprobe programs cannot even be put: bpfleet
    # refuses attach kinds its agents cannot attach.)
    name = unique("execs-core")
    with dashboard.client() as client:
        put_program(
            client,
            name,
            {
                "artifact": {"name": "execsnoop", "version": "1.0.0"},
                "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
                "nodeSelector": {"matchLabels": {"tier": "core"}},
            },
        )
    older, newer = dashboard.node(2).name, dashboard.node(0).name
    with visitor(browser, dashboard, "kernels", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go("/kernels")
        matrix = page.locator("table.matrix")
        expect(matrix.locator("thead")).to_contain_text("map type ringbuf")
        expect(matrix.locator("tr", has_text=older)).to_contain_text("no")
        expect(matrix.locator("tr", has_text=newer)).to_contain_text("yes")
        matrix.locator("tr", has_text=older).get_by_role(
            "button", name="What could not run here"
        ).click()
        assert f"node={older}" in person.url()
        fits = page.get_by_role("region", name=re.compile("could not run"))
        fit = fits.locator("tr", has_text=name)
        expect(fit).to_contain_text("Incompatible")
        expect(fit).to_contain_text("kernel lacks map type ringbuf")
        expect(fits.locator("tr", has_text="syscalls")).to_contain_text("Compatible")
        person.check("kernels-node")

        page.get_by_label("Node A").fill(newer)
        page.get_by_label("Node B").fill(older)
        page.get_by_role("button", name="Compare").click()
        maps = page.locator("tr", has=page.get_by_role("rowheader", name="map type"))
        expect(maps).to_contain_text("ringbuf")
        assert f"a={newer}" in person.url()
        person.check("kernels-compare")

        person.go(f"/programs/{name}")
        row = page.locator("tbody tr", has_text=older)
        expect(row).to_contain_text("Incompatible", timeout=60_000)
        expect(row).to_contain_text("kernel lacks map type ringbuf")
        person.check("program-incompatible")


def test_policies_and_a_change_on_an_agent_shows_without_a_reload(
    browser: Browser, dashboard: Dashboard
) -> None:
    node = dashboard.node(1)
    interface = f"vui{unique('x')[-5:]}"
    endpoint_veth(node, interface)
    namespace = unique("shop")
    with visitor(browser, dashboard, "policies", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go(f"/nodes/{node.name}?tab=endpoints")
        expect(page.get_by_text("This node declares no endpoint.")).to_be_visible()
        document = {
            "endpoints": [
                {
                    "namespace": namespace,
                    "name": "db",
                    "labels": {"app": "db"},
                    "ip": str(ipaddress.ip_network(node.pod_cidr)[2]),
                    "interface": interface,
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                }
            ],
        }
        (node.state_dir / "endpoints.yaml").write_text(yaml.safe_dump(document))
        # The agent declares it; the open page shows it at its next poll, no reload.
        expect(page.locator("tbody tr", has_text=f"{namespace}/db")).to_contain_text(
            "pg 5432/TCP", timeout=30_000
        )
        person.check("node-endpoints-live")

        policy = {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": namespace, "name": "db-ingress"},
            "spec": {
                "mode": "audit",
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        }
        with dashboard.client() as client:
            response = client.put(f"/v1/policies/{namespace}/db-ingress", json=policy)
            assert response.status_code == 200, response.text
        person.go(f"/policies?namespace={namespace}")
        row = page.locator("tbody tr", has_text=f"{namespace}/db-ingress")
        expect(row).to_contain_text("1/1 nodes", timeout=60_000)
        expect(row).to_contain_text("audit")
        expect(row).to_contain_text("Enforcing")
        expect(row).to_contain_text("set through the API")
        person.check("policies")
        row.get_by_role("link").first.click()
        nodes = page.locator("tbody tr", has_text=node.name)
        expect(nodes).to_contain_text("Enforcing")
        person.check("policy-detail")
        nodes.get_by_role("link", name=node.name).click()
        expect(page.get_by_role("tab", name="Policy report")).to_have_attribute(
            "aria-selected", "true"
        )
        expect(page.get_by_text(f"{namespace}/db-ingress@1")).to_be_visible()
        expect(page.get_by_text("Packets audit mode would deny")).to_be_visible()
        person.check("node-policy-report")


def test_a_rejected_revision_names_file_and_line_after_reconcile_now(
    browser: Browser, dashboard: Dashboard
) -> None:
    broken = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {}
  ingress:
    - ports:
        - port: 8080
          endPort: 80
"""
    commit = dashboard.repo.commit("a broken policy", {"programs/broken.yaml": broken})
    with visitor(browser, dashboard, "gitsource", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go("/gitsources")
        row = page.locator("tbody tr", has_text="default/fleet")
        expect(row).to_contain_text("Ready")
        expect(row).to_contain_text("branch main")
        expect(row).to_contain_text("1h")
        person.check("gitsources")
        row.get_by_role("link", name="default/fleet").click()
        # The interval is an hour: only "reconcile now" makes this pass happen.
        page.get_by_role("button", name="Reconcile now").click()
        history = page.locator("tbody tr", has_text=commit[:7])
        expect(history).to_contain_text("Rejected", timeout=30_000)
        expect(history).to_contain_text("programs/broken.yaml:9 spec.ingress[0].ports[0].endPort:")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Stalled")
        person.check("gitsource-rejected")
        page.get_by_role("tab", name="Inventory").click()
        expect(page.locator("tbody tr", has_text="syscalls")).to_contain_text("3/3")
        person.check("gitsource-inventory")

        dashboard.repo.commit("fix it", remove=("programs/broken.yaml",))
        page.get_by_role("tab", name="History").click()
        page.get_by_role("button", name="Reconcile now").click()
        expect(page.locator("tbody tr").first).to_contain_text("Applied", timeout=30_000)
        expect(page.get_by_role("heading", level=1)).to_contain_text("Ready")


def test_the_kill_switch_detaches_on_the_agents(browser: Browser, dashboard: Dashboard) -> None:
    name = unique("kill")
    with dashboard.client() as client:
        put_program(client, name, syscount())
    wait_for(
        lambda: all(node.program_state(name) == "Attached" for node in dashboard.nodes),
        90,
        f"{name} attached everywhere",
    )
    with visitor(browser, dashboard, "kill", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go(f"/programs/{name}")
        expect(page.locator("tbody tr")).to_have_count(3)
        page.get_by_role("button", name="Kill switch…").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Kill {name} everywhere?")
        confirm = dialog.get_by_role("button", name=f"Kill {name}")
        expect(confirm).to_be_disabled()
        dialog.get_by_label(re.compile("to confirm")).fill(name[:-1])
        expect(confirm).to_be_disabled()
        dialog.get_by_label(re.compile("to confirm")).fill(name)
        person.page.screenshot(path=str(person.shots / "00-kill-dialog.png"))
        confirm.click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Killed")
        # The nodes tab empties once every agent reported the detach (the banner says
        # "killed" as soon as the kill is stored).
        nodes_tab = page.get_by_role("tabpanel", name="Nodes")
        expect(nodes_tab.get_by_text("Detached from every node.")).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("ol.timeline")).to_contain_text("Killed")
        expect(page.locator("ol.timeline li", has_text="Detached")).to_have_count(3)
        person.check("program-killed")
    assert all(node.program_state(name) in (None, "Detached") for node in dashboard.nodes)
    assert not any((node.pin_root / name).exists() for node in dashboard.nodes)


def test_a_viewer_sees_no_action(browser: Browser, dashboard: Dashboard) -> None:
    name = unique("slow")
    with dashboard.client() as client:
        put_program(client, name, syscount(rollout={"steps": ["1", "100%"], "bakeSeconds": 600}))
    with visitor(browser, dashboard, "viewer", token=dashboard.viewer_token) as person:
        page = person.page
        person.go(f"/programs/{name}")
        expect(page.get_by_role("heading", name=re.compile("Rollout"))).to_contain_text(
            "Baking", timeout=60_000
        )
        expect(page.get_by_text("sre-viewer (viewer)")).to_be_visible()
        for action in ("Pause", "Resume", "Abort", "Kill switch…"):
            expect(page.get_by_role("button", name=action)).to_have_count(0)
        person.check("viewer-program")
        person.go("/gitsources/default/fleet")
        expect(page.get_by_role("heading", level=1)).to_contain_text("default/fleet")
        expect(page.get_by_role("button", name="Reconcile now")).to_have_count(0)
        person.check("viewer-gitsource")
    with dashboard.client() as client:
        rollout = client.get(f"/v1/programs/{name}").json()["rollout"]["id"]
        client.post(f"/v1/rollouts/{rollout}/abort")


def test_an_unreachable_api_is_said_and_the_last_data_stays(
    browser: Browser, dashboard: Dashboard
) -> None:
    with visitor(browser, dashboard, "unreachable", token=dashboard.api.admin_token) as person:
        person.allowed_console = [ABORTED]
        page = person.page
        person.go("/nodes")
        expect(page.locator("tbody tr")).to_have_count(3)
        page.route("**/v1/**", lambda route: route.abort())
        # The banner (the view may say so too, in an error note of its own).
        banner = page.locator(".banner[role=alert]")
        expect(banner).to_contain_text("The API is unreachable", timeout=15_000)
        expect(banner).to_contain_text("stale")
        expect(page.locator("tbody tr")).to_have_count(3)  # the last data stays
        expect(page.locator("main.stale")).to_have_count(1)
        page.screenshot(path=str(person.shots / "01-unreachable.png"), full_page=True)
        page.unroute("**/v1/**")
        expect(banner).to_have_count(0, timeout=15_000)
        expect(page.get_by_test_id("freshness")).to_contain_text(re.compile(r"Updated \d+ s ago"))
        person.check("reachable-again")
