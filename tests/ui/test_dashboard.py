"""The dashboard in a real browser against the real fleet: every view, its content, its
URL state, live updates, roles, and the actions that reach the agents.

Each test visits its pages through ``Visitor`` (see conftest): axe, keyboard, no state
by colour alone, no console error, no other origin, a screenshot per page.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, expect

from tests.ui.conftest import Dashboard, endpoint_veth, unique, visitor
from tests.polling import wait_for

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


def test_overview_nodes_and_view_state_in_the_url(
    browser: Browser, dashboard: Dashboard
) -> None:
    with visitor(browser, dashboard, "overview-nodes", token=dashboard.api.admin_token) as person:
        page = person.page
        person.go("/")
        sync = page.get_by_role("article", name="GitSource default/fleet")
        expect(sync).to_contain_text(re.compile(r"Git → fleet: applied [0-9a-f]{7}, \d+ (s|min) ago"))
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
        expect(page.get_by_text(re.compile(r"Failure budget: 0 failed of 0 allowed"))).to_be_visible()
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
