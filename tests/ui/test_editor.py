"""The policy editor in a real browser against the real fleet: policies opened from the
API, from Git (the applied revision, and a rejected one at its line) and from templates;
the diagram and the YAML kept in step both ways with one undo; the API's diagnostics,
lints, fixes, ratings, matrix, explanations and flow tests as the text is typed; the
peer picker; the tutorial; roles; and that editing never writes to the fleet.

The shop's endpoints live on nodes 0 and 2 (the dashboard's tests declare theirs on
node 1). Each page is checked by ``Visitor`` (axe, keyboard, colour, console, origin)
and saved as a screenshot.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, expect

from tests.polling import wait_for
from tests.ui.conftest import Dashboard, Visitor, endpoint_veth, unique, visitor

pytestmark = [pytest.mark.ui, pytest.mark.bpf, pytest.mark.services]

SHOP = {
    0: [
        ("web", "app", "web", [{"name": "http", "port": 80, "protocol": "TCP"}]),
        ("batch", "app", "batch", []),
    ],
    2: [
        ("db", "app", "db", [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        ("coredns", "k8s-app", "kube-dns", [{"name": "dns", "port": 53, "protocol": "UDP"}]),
    ],
}
DB_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"namespace": "shop", "name": "db-ingress"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}
        ],
    },
}
COMMENTED = """\
# The database: only web may connect.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}   # the database
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}   # web only
    ports: [{port: 5432}]
"""


def endpoint(node: int, name: str, key: str, value: str, ports: list[Any], ip: str) -> Any:
    namespace = "kube-system" if name == "coredns" else "shop"
    return {
        "namespace": namespace,
        "name": name,
        "labels": {key: value},
        "ip": ip,
        "interface": f"vsh{node}{name[:3]}",
        "ports": ports,
    }


@pytest.fixture(scope="module")
def shop(dashboard: Dashboard) -> Dashboard:
    """shop/web and shop/batch on node 0, shop/db and kube-system/coredns on node 2,
    declared by their agents; shop/db-ingress stored through the API."""
    for index, entries in SHOP.items():
        node = dashboard.node(index)
        prefix = node.pod_cidr.rsplit(".", 1)[0]
        declared = []
        for position, (name, key, value, ports) in enumerate(entries):
            item = endpoint(index, name, key, value, ports, f"{prefix}.{20 + position}")
            endpoint_veth(node, item["interface"])
            declared.append(item)
        (node.state_dir / "endpoints.yaml").write_text(yaml.safe_dump({"endpoints": declared}))
    with dashboard.client() as client:
        wait_for(
            lambda: client.get("/v1/topology").json()["total"] >= 4,
            60,
            "the shop's endpoints in the topology",
        )
        response = client.put("/v1/policies/shop/db-ingress", json=DB_INGRESS)
        assert response.status_code == 200, response.text
    return dashboard


def no_writes(person: Visitor) -> None:
    """G7: the editor reads; it never writes policies or programs around Git."""
    writes = [
        (method, path)
        for method, path in person.requests
        if method in ("PUT", "DELETE", "PATCH")
        and (path.startswith("/v1/policies") or path.startswith("/v1/programs"))
    ]
    assert writes == []


def yaml_text(page: Page) -> str:
    return page.locator(".cm-content").inner_text()


PASTE = """(text) => {
  const content = document.querySelector("[data-testid=yaml-editor]")
    .shadowRoot.querySelector(".cm-content");
  const data = new DataTransfer();
  data.setData("text/plain", text);
  content.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
}"""


def set_text(page: Page, text: str) -> None:
    """Replace the whole text as a person would: select all, then paste. (Typing it with
    the browser's own insertText makes the browser style what it inserts, which the
    page's policy refuses; a paste goes through the editor, as a real one does.)"""
    page.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.evaluate(PASTE, text)


DRAG = """([source, target]) => {
  const data = new DataTransfer();
  source.dispatchEvent(new DragEvent("dragstart", {dataTransfer: data, bubbles: true}));
  for (const kind of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(kind, {dataTransfer: data, bubbles: true, cancelable: true}));
  }
  source.dispatchEvent(new DragEvent("dragend", {dataTransfer: data, bubbles: true}));
}"""


def drag(page: Page, source: Locator, target: Locator) -> None:
    """Drag ``source`` onto ``target`` with the drag events a browser sends (headless
    Chromium sends no dragover for a pointer moved by the test)."""
    page.evaluate(DRAG, [source.element_handle(), target.element_handle()])


def box(page: Page, direction: str, title: str) -> Locator:
    return page.get_by_role("article", name=f"{direction}: {title}")


def test_a_stored_policy_opens_and_the_diagram_and_yaml_follow_each_other(
    browser: Browser, shop: Dashboard
) -> None:
    db_node, web_node = shop.node(2).name, shop.node(0).name
    with visitor(browser, shop, "editor-policy", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor")
        page.get_by_role("link", name="shop/db-ingress").click()
        expect(page.get_by_test_id("opened-from")).to_contain_text("set through the API")
        centre = page.get_by_role("region", name="Selected endpoints")
        expect(centre).to_contain_text(f"shop/db on {db_node}")
        expect(box(page, "ingress", "this namespace")).to_contain_text("allowed")
        expect(box(page, "ingress", "outside (ipBlock)")).to_contain_text("denied")
        person.check("editor-stored")

        # The selector, as it is typed, changes what the centre lists (E3).
        set_text(page, COMMENTED.replace("{app: db}}   #", "{app: web}}   #"))
        expect(centre).to_contain_text(f"shop/web on {web_node}")
        set_text(page, COMMENTED)
        expect(centre).to_contain_text(f"shop/db on {db_node}")
        dns = box(page, "egress", "DNS")
        expect(dns).to_contain_text("denied")

        # "Allow DNS": the API's rule, written keeping comments and key order (E5).
        dns.get_by_role("button", name=re.compile("Allow DNS")).click()
        expect(dns).to_contain_text("allowed")
        written = yaml_text(page)
        assert written.startswith(COMMENTED.rstrip("\n"))  # nothing before the rule moved
        assert "kube-dns" in written
        assert "# web only" in written
        # One undo takes the click back, in the text and so in the diagram.
        page.locator(".cm-content").click()
        page.keyboard.press("Control+z")
        expect(dns).to_contain_text("denied")
        assert "kube-dns" not in yaml_text(page)
        page.keyboard.press("Control+y")
        expect(dns).to_contain_text("allowed")

        # Hover a rule: its lines light up; hover a line: its rule lights up (E6).
        chip = page.locator("[data-rule='ingress/0']")
        chip.hover()
        expect(page.locator(".cm-line.cm-rule-lit")).to_have_count(3)
        page.mouse.move(0, 0)
        expect(page.locator(".cm-line.cm-rule-lit")).to_have_count(0)
        page.locator(".cm-line", has_text="# web only").hover()
        expect(chip).to_have_class(re.compile(r"\blit\b"))
        person.check("editor-dns-allowed")

        with page.expect_download() as download:
            page.get_by_role("button", name="Download YAML").click()
        saved = download.value.path().read_text()
        assert "# web only" in saved
        assert "kube-dns" in saved
        no_writes(person)


def test_typing_shows_the_apis_diagnostic_on_its_line(browser: Browser, shop: Dashboard) -> None:
    broken = COMMENTED.replace("ports: [{port: 5432}]", "ports: [{port: 0}]")
    with httpx.Client(base_url=shop.origin) as client:
        client.headers["Authorization"] = f"Bearer {shop.api.admin_token}"
        [expected] = client.post("/v1/policies/validate", json={"text": broken}).json()["problems"]
    with visitor(browser, shop, "editor-diagnostics", token=shop.api.admin_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress")
        expect(page.get_by_test_id("valid")).to_be_visible()
        set_text(page, COMMENTED)
        page.locator(".cm-line", has_text="ports: [{port: 5432}]").click()
        page.keyboard.press("End")
        for _ in range(6):  # "5432}]": back over it, then type the 0 a person would
            page.keyboard.press("Backspace")
        page.keyboard.type("0}]")
        inline = page.locator(".cm-inline-problem")
        expect(inline).to_have_text(f"✕ {expected['text']}")
        line = page.locator(".cm-line", has=inline)
        expect(line).to_contain_text("port: 0")
        assert expected["line"] == 11
        problems = page.get_by_role("list", name="Problems")
        expect(problems).to_contain_text("line 11")
        expect(problems).to_contain_text("Invalid value: 0")
        person.check("editor-diagnostic")
        no_writes(person)


def test_lints_are_fixed_in_one_click_with_their_proof_and_the_rating(
    browser: Browser, shop: Dashboard
) -> None:
    split = COMMENTED.replace(
        "    ports: [{port: 5432}]\n", "  - ports: [{port: 5432}]   # an extra dash\n"
    ).replace("[Ingress, Egress]", "[Ingress]")
    with visitor(browser, shop, "editor-lints", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress&tab=findings")
        set_text(page, split)
        lint = page.get_by_role("listitem", name="lint split-ports")
        expect(lint).to_contain_text("line 11")
        expect(lint).to_contain_text(re.compile(r"Proof: .* → shop/db TCP/5432 is allowed"))
        expect(page.get_by_test_id("grade")).to_contain_text("grade D")
        # The same lint on its line in the text, in the API's words.
        expect(page.locator(".cm-inline-problem")).to_contain_text("split-ports")
        person.check("editor-lint")
        lint.get_by_role("button", name=re.compile("^Fix:")).click()
        expect(page.get_by_role("listitem", name="lint split-ports")).to_have_count(0)
        expect(page.get_by_test_id("grade")).to_contain_text("grade A")
        # The fix replaces the rules; comments outside them stay where they were.
        fixed = yaml_text(page)
        assert fixed.startswith("# The database: only web may connect.\n")
        assert "{app: db}}   # the database" in fixed

        # The widest peer: everywhere on every port rates lowest and names its line (E9).
        anywhere = COMMENTED.replace("[Ingress, Egress]", "[Ingress]").replace(
            "    ports: [{port: 5432}]\n", "  - from: [{ipBlock: {cidr: 0.0.0.0/0}}]\n"
        )
        set_text(page, anywhere)
        expect(page.get_by_test_id("grade")).to_contain_text("grade F")
        expect(page.get_by_role("button", name="go to line 11")).to_be_visible()
        person.check("editor-rating-f")
        no_writes(person)


def test_the_matrix_before_and_after_and_a_cell_explained(
    browser: Browser, shop: Dashboard
) -> None:
    batch_instead = COMMENTED.replace("[Ingress, Egress]", "[Ingress]").replace(
        "{app: web}}   # web only", "{app: batch}}   # batch, not web"
    )
    with visitor(browser, shop, "editor-matrix", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress&tab=matrix")
        set_text(page, batch_instead)
        page.get_by_label("Port").fill("5432")
        page.get_by_label("Port").press("Enter")
        assert "port=5432" in person.url()
        expect(page.get_by_test_id("diff-summary")).to_contain_text("+1 allowed, -1 denied")
        web_db = page.get_by_role("gridcell", name="shop/web to shop/db: denied (newly denied)")
        batch_db = page.get_by_role(
            "gridcell", name="shop/batch to shop/db: allowed (newly allowed)"
        )
        expect(web_db).to_have_text("\u2212✕")  # a minus sign: newly denied
        expect(batch_db).to_have_text("+✓")
        batch_db.click()
        assert "cell=shop%2Fbatch%7Cshop%2Fdb" in person.url()
        why = page.get_by_role("region", name="Why this cell")
        expect(why).to_contain_text("allowed")
        rule = why.get_by_role(
            "button", name=re.compile(r"db-ingress ingress rule 0 \(lines 9.11 ")
        )
        expect(rule).to_be_visible()
        person.check("editor-explain")
        rule.click()  # selects the rule's lines in the text
        selected = page.evaluate(
            "() => document.querySelector('[data-testid=yaml-editor]').shadowRoot"
            ".getSelection().toString()"
        )
        assert "- from:" in selected
        assert "batch, not web" in selected

        # The cell is in the URL: a reload asks again (the text is the stored one then).
        page.reload()
        expect(page.get_by_role("region", name="Why this cell")).to_contain_text("denied")
        # This policy alone, against its stored version alone (E16).
        page.get_by_label("This policy only").check()
        assert "only=1" in person.url()
        expect(page.get_by_test_id("diff-summary")).to_contain_text("+0 allowed, -0 denied")
        no_writes(person)


def test_flow_tests_turn_passed_or_failed_as_the_policy_is_typed(
    browser: Browser, shop: Dashboard
) -> None:
    flows = (
        "flows:\n"
        "  - shop/web -> shop/db TCP/5432 expect deny\n"
        "  - shop/batch -> shop/db TCP/pg expect allow\n"
    )
    batch_instead = COMMENTED.replace("[Ingress, Egress]", "[Ingress]").replace(
        "{app: web}}", "{app: batch}}"
    )
    with visitor(browser, shop, "editor-flows", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress&tab=flows")
        page.get_by_role("textbox", name=re.compile("Flow tests")).fill(flows)
        expect(page.get_by_test_id("flow-summary")).to_have_text("0 passed, 2 failed")
        expect(page.locator("tr.flow-failed")).to_have_count(2)
        person.check("editor-flows-red")
        set_text(page, batch_instead)
        expect(page.get_by_test_id("flow-summary")).to_have_text("2 passed, 0 failed")
        expect(page.locator("tr.flow-passed")).to_have_count(2)
        person.check("editor-flows-green")
        no_writes(person)


def test_the_peer_picker_offers_the_fleets_labels_and_the_internet_drops_on_a_side(
    browser: Browser, shop: Dashboard
) -> None:
    with visitor(browser, shop, "editor-picker", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor?template=default-deny-ingress&namespace=shop&tab=peer")
        suggestions = page.get_by_test_id("suggestions")
        expect(suggestions).to_contain_text("app")
        expect(suggestions).to_contain_text("pg (TCP/5432)")
        values = page.locator("datalist#pod-keys option")
        assert "k8s-app" in [values.nth(i).get_attribute("value") for i in range(values.count())]
        inside = box(page, "ingress", "this namespace")
        expect(inside).to_contain_text("denied")
        page.get_by_label("Direction").select_option("ingress")
        page.get_by_label("Pod label").fill("app")
        page.get_by_label("value", exact=True).fill("web")
        page.get_by_label("Port").fill("pg")
        person.check("editor-picker")
        page.get_by_role("button", name="Add the rule").click()
        expect(page.locator(".cm-content")).to_contain_text("app: web")
        expect(page.locator(".cm-content")).to_contain_text("port: pg")
        expect(inside).to_contain_text("allowed")

        outside = box(page, "ingress", "outside (ipBlock)")
        expect(outside).to_contain_text("denied")
        drag(
            page,
            page.locator(".internet-object"),
            page.get_by_role("region", name="Ingress sources"),
        )
        expect(outside).to_contain_text("allowed")
        text = yaml_text(page)
        assert "0.0.0.0/0" in text
        assert "192.168.0.0/16" in text
        assert "# every endpoint of the namespace" in text  # the template's comment stays
        person.check("editor-internet")
        no_writes(person)


def test_templates_and_the_mode_switch(browser: Browser, shop: Dashboard) -> None:
    with visitor(browser, shop, "editor-templates", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor")
        page.get_by_label("Namespace", exact=True).fill("shop")
        templates = page.get_by_role("region", name="Start from a template")
        for title in (
            "Default-deny ingress",
            "Default-deny egress, DNS allowed",
            "Same namespace only",
            "From namespace monitoring",
            "To the Internet, not private ranges",
        ):
            expect(templates.get_by_role("link", name=title)).to_be_visible()
        person.check("editor-start")
        templates.get_by_role("link", name="From namespace monitoring").click()
        expect(page.locator(".cm-content")).to_contain_text(
            "kubernetes.io/metadata.name: monitoring"
        )
        expect(box(page, "ingress", "other namespaces")).to_contain_text("allowed")
        expect(page.get_by_test_id("selected-count")).to_contain_text("Selects 3 endpoints")
        page.get_by_role("button", name="audit").click()
        expect(page.locator(".cm-content")).to_contain_text("mode: audit")
        expect(page.locator(".cm-content")).to_contain_text("apiVersion: bpfleet.io/v1alpha1")
        expect(page.get_by_role("button", name="audit")).to_have_attribute("aria-pressed", "true")
        person.check("editor-audit")
        page.get_by_role("button", name="enforce").click()
        expect(page.locator(".cm-content")).to_contain_text("mode: enforce")
        no_writes(person)


def test_the_tutorials_lessons_are_done_when_their_flow_tests_pass(
    browser: Browser, shop: Dashboard
) -> None:
    with shop.client() as client:
        lessons = client.get("/v1/policies/lessons").json()["lessons"]
    assert len(lessons) == 5
    with visitor(browser, shop, "editor-tutorial", token=shop.proposer_token) as person:
        page = person.page
        for index, lesson in enumerate(lessons):
            person.go(f"/editor?lesson={lesson['id']}&tab=flows")
            state = page.get_by_test_id("lesson-state")
            expect(state).to_contain_text("Not done yet")
            if index == 0:
                person.check("lesson-open")
            set_text(page, lesson["solution"])
            expect(state).to_contain_text("Lesson done")
            if index == 0:
                person.check("lesson-done")
        person.go("/editor")
        tutorial = page.get_by_role("region", name="Tutorial")
        expect(tutorial.locator("[data-state=done]")).to_have_count(5)
        no_writes(person)


def test_git_files_open_at_the_applied_revision_and_a_rejection_at_its_line(
    browser: Browser, shop: Dashboard
) -> None:
    name = unique("web-ingress")
    policy = f"""\
# {name}: http for everyone, from Git
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: nobody-yet}}}}
  ingress:
  - ports: [{{port: 80}}]
"""
    applied = shop.repo.commit("a policy from Git", {f"programs/{name}.yaml": policy})
    broken = policy.replace("port: 80", "port: 80, endPort: 70")
    with visitor(browser, shop, "editor-git", token=shop.api.admin_token) as person:
        page = person.page
        person.go("/gitsources/default/fleet")
        page.get_by_role("button", name="Reconcile now").click()
        expect(page.locator("tbody tr", has_text=applied[:7])).to_contain_text(
            "Applied", timeout=30_000
        )
        person.go(f"/editor?policy=shop%2F{name}")
        expect(page.get_by_test_id("opened-from")).to_contain_text(
            f"programs/{name}.yaml in GitSource default/fleet @ {applied[:7]} (applied)"
        )
        expect(page.locator(".cm-content")).to_contain_text("http for everyone, from Git")
        person.check("editor-from-git")

        rejected = shop.repo.commit("a broken port range", {f"programs/{name}.yaml": broken})
        person.go("/gitsources/default/fleet")
        page.get_by_role("button", name="Reconcile now").click()
        row = page.locator("tbody tr", has_text=rejected[:7])
        expect(row).to_contain_text("Rejected", timeout=30_000)
        error = row.get_by_role("link", name=f"programs/{name}.yaml:8")
        words = row.locator("ul.problems li").first.inner_text()
        error.click()
        expect(page.get_by_test_id("opened-from")).to_contain_text(
            f"@ {rejected[:7]} (not applied)"
        )
        inline = page.locator(".cm-inline-problem")
        expect(inline).to_contain_text("spec.ingress[0].ports[0].endPort")
        message = inline.inner_text().removeprefix("✕ ")
        assert message.split(": ", 1)[1] in words  # the same words as the GitSource's
        active = page.locator(".cm-activeLine")
        expect(active).to_contain_text("endPort: 70")
        person.check("editor-rejected-at-line")
        no_writes(person)
    shop.repo.commit("remove it", remove=(f"programs/{name}.yaml",))
    with shop.client() as client:
        client.post("/v1/gitsources/default/fleet/reconcile")
        wait_for(
            lambda: client.get(f"/v1/policies/shop/{name}").status_code == 404,
            60,
            "the policy pruned",
        )


def test_an_audit_policys_page_leads_to_promoting_it(browser: Browser, shop: Dashboard) -> None:
    name = unique("audited")
    document = {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"mode": "audit", "podSelector": {"matchLabels": {"app": "nobody"}}},
    }
    with shop.client() as client:
        assert client.put(f"/v1/policies/shop/{name}", json=document).status_code == 200
    with visitor(browser, shop, "editor-promote", token=shop.proposer_token) as person:
        page = person.page
        person.go(f"/policies/shop/{name}")
        expect(page.locator("dl.facts")).to_contain_text("audit")
        page.get_by_role("link", name="Promote to enforce…").click()
        expect(page.locator(".cm-content")).to_contain_text("mode: enforce")
        expect(page.get_by_role("button", name="enforce")).to_have_attribute("aria-pressed", "true")
        person.check("editor-promoted")
        no_writes(person)
    with shop.client() as client:
        client.delete(f"/v1/policies/shop/{name}")


def test_a_viewer_reads_and_a_proposer_edits_but_never_acts(
    browser: Browser, shop: Dashboard
) -> None:
    with visitor(browser, shop, "editor-viewer", token=shop.viewer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress")
        expect(page.get_by_text("Read-only: your role may look, not change.")).to_be_visible()
        expect(page.locator(".cm-content")).to_have_attribute("contenteditable", "false")
        expect(page.get_by_role("button", name=re.compile("^Allow"))).to_have_count(0)
        expect(page.get_by_role("button", name="audit")).to_have_count(0)
        person.check("editor-viewer")
        no_writes(person)
    with visitor(browser, shop, "editor-proposer", token=shop.proposer_token) as person:
        page = person.page
        person.go("/editor?policy=shop%2Fdb-ingress")
        expect(page.locator(".cm-content")).to_have_attribute("contenteditable", "true")
        expect(page.get_by_role("button", name=re.compile("^Allow")).first).to_be_visible()
        person.go("/gitsources/default/fleet")
        expect(page.get_by_role("heading", level=1)).to_contain_text("default/fleet")
        expect(page.get_by_role("button", name="Reconcile now")).to_have_count(0)
        person.go("/programs/syscalls")
        expect(page.get_by_role("heading", level=1)).to_contain_text("syscalls")
        for action in ("Pause", "Resume", "Abort", "Kill switch…"):
            expect(page.get_by_role("button", name=action)).to_have_count(0)
        no_writes(person)
