"""Browser tests of the dashboard: Debian's Chromium, driven by Playwright, against one
real fleet shared by every test here (the API serving the built UI, a Celery worker,
three real agents in network namespaces, the standalone GitOps pipeline following a
real Git repository).

Every page a test visits is checked the same way (``Visitor.check``): no console error,
no request to another origin, no serious or critical axe violation, every control
reachable with the Tab key, no state told by colour alone; and a screenshot of it is
saved under ``test-artifacts/ui/`` for people to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from bpfleet_cli.localfleet import Bridge, FleetNode, bridge, free_port, ip, local_fleet
from bpfleet_core import artifacts
from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog, sign_object
from tests.e2e.conftest import uploaded
from tests.gitrepos import GitRepo
from tests.manifests import program_yaml
from tests.operator.processes import BPFLEET, operator_environment, running
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SUBNET = 216  # apart from `make up` (214), the e2e tests (213) and the benchmarks (215)
# The policy editor's tests declare their endpoints in these namespaces.
NAMESPACES = {"shop": {"team": "payments"}, "monitoring": {"team": "sre"}, "kube-system": {}}
LABELS = [
    {"tier": "edge", "zone": "a"},
    {"tier": "edge", "zone": "b"},
    {"tier": "core", "zone": "c"},
]
# A program the verifier refuses: a hash map value used without the NULL check (an
# array lookup with a constant key in range may never be NULL to a new verifier).
VERIFIER_REJECTS = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct {
\t__uint(type, BPF_MAP_TYPE_HASH);
\t__uint(max_entries, 1);
\t__type(key, __u32);
\t__type(value, __u64);
} calls SEC(".maps");
SEC("raw_tracepoint/sys_enter")
int count_unchecked(void *ctx)
{
\t__u32 zero = 0;
\t__u64 *count = bpf_map_lookup_elem(&calls, &zero);
\t*count += 1; /* no NULL check: refused by the verifier */
\treturn 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def recorded_features(**changes: Any) -> dict[str, Any]:
    """This machine's kind of feature report, so agents start without probing."""
    report = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    report = report.model_copy(update={"kernel_release": os.uname().release, **changes})
    return dict(json.loads(report.to_json()))


def verifier_rejected_artifact(catalog: SignedCatalog, work: Path) -> Path:
    """``unchecked`` 1.0.0, signed with the tests' key, that no kernel's verifier loads."""
    source = work / "unchecked.bpf.c"
    source.write_text(VERIFIER_REJECTS)
    built = work / "unchecked.bpf.o"
    flags = ["-g", "-O2", "-target", "bpf", f"-I{REPO / 'bpf-catalog'}"]
    subprocess.run(["clang", *flags, "-c", str(source), "-o", str(built)], check=True)
    directory = work / "artifacts"
    sign_object(built, directory, "unchecked", "1.0.0", catalog.private_key)
    return directory


@dataclass
class Dashboard:
    """The shared fleet: its API (which serves the UI), agents, Git repository."""

    api: services.Api
    nodes: list[FleetNode]
    repo: GitRepo
    viewer_token: str
    proposer_token: str
    origin: str = ""

    def __post_init__(self) -> None:
        self.origin = self.api.url

    def client(self) -> httpx.Client:
        return self.api.client()

    def node(self, index: int) -> FleetNode:
        return self.nodes[index]


@pytest.fixture(scope="session")
def ui_network() -> Iterator[Bridge]:
    with bridge(subnet=SUBNET) as created:
        yield created


@pytest.fixture(scope="session")
def dashboard(
    ui_network: Bridge,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    work = tmp_path_factory.mktemp("dashboard")
    dist = REPO / "ui" / "dist" / "index.html"
    assert dist.is_file(), "the dashboard is not built: run `make ui`"
    with services.api_server(
        f"sqlite:///{work}/bpfleet.db",
        redis.url,
        signed_catalog.trust,
        work,
        host=ui_network.address,
        rollout_tick_seconds="0.3",
    ) as api:
        api.start_worker()
        uploaded(
            api, signed_catalog, "execsnoop", "syscount", "fentry_unlink", "netpol", "tc_counter"
        )
        rejected = artifacts.ArtifactFiles.in_directory(
            verifier_rejected_artifact(signed_catalog, work), "unchecked"
        )
        with api.client() as client:
            files = {
                part: getattr(rejected, part).read_bytes()
                for part in ("object", "manifest", "signature")
            }
            assert client.post("/v1/artifacts", files=files).status_code == 201
            viewer = client.post("/v1/tokens", json={"name": "sre-viewer", "role": "viewer"})
            viewer_token = viewer.json()["token"]
            proposer = client.post("/v1/tokens", json={"name": "dev-proposer", "role": "proposer"})
            proposer_token = proposer.json()["token"]
        repo = GitRepo(work / "fleet-repo")
        repo.commit(
            "syscalls everywhere",
            {
                "programs/syscalls.yaml": program_yaml(
                    "syscalls", "syscount", "count_sys_enter", "raw_tracepoint"
                )
            },
        )
        source = {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "GitSource",
            "metadata": {"name": "fleet", "namespace": "default"},
            # An hour: every later pass in these tests is a "reconcile now".
            "spec": {"url": f"file://{repo.path}", "path": "programs", "interval": "1h"},
        }
        source_file = work / "gitsource.yaml"
        source_file.write_text(yaml.safe_dump(source))
        with (
            local_fleet(
                api.url,
                api.bootstrap_token,
                ui_network,
                trust=signed_catalog.trust,
                work=work / "agents",
                labels=LABELS,
                # Each node gets its pod CIDR (the API takes endpoints only inside it), and
                # the namespaces their labels.
                admin_token=api.admin_token,
                namespaces=NAMESPACES,
                features={
                    0: recorded_features(),
                    1: recorded_features(),
                    2: recorded_features(
                        map_types={**recorded_features()["map_types"], "ringbuf": False}
                    ),
                },
            ) as nodes,
            api.client() as client,
        ):
            names = {node.name for node in nodes}
            wait_for(  # generous: the machine is shared, and agents start in parallel
                lambda: names <= {n["name"] for n in client.get("/v1/nodes").json()},
                180,
                "the agents to register",
            )
            with running(
                [BPFLEET, "operator", "standalone", str(source_file)],
                operator_environment(api, work / "operator", 0),
                work / "operator.log",
            ):
                wait_for(
                    lambda: client.get("/v1/gitsources/default/fleet").status_code == 200,
                    60,
                    "the GitSource's first pass",
                )
                yield Dashboard(api, nodes, repo, viewer_token, proposer_token)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's chromium only: nothing is downloaded (never `playwright install`).
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield launched
    launched.close()


FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), "
    "textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])"
)
MARK_FOCUSABLE = """(selector) => {
  const visible = (element) => {
    if (element.closest("dialog:not([open])")) return false;
    // Content of a closed <details> is hidden by content-visibility, not by its box.
    if (!element.checkVisibility({ contentVisibilityAuto: true, visibilityProperty: true })) {
      return false;
    }
    const box = element.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const found = [...document.querySelectorAll(selector)].filter(visible);
  found.forEach((element, index) => element.setAttribute("data-kb", String(index)));
  return found.map((element) => element.outerHTML.slice(0, 120));
}"""
COLOUR_ONLY = """() => {
  const mute = (text) => text.replace(/[✓✕!…•▲▼]/g, "").trim();
  const silent = [];
  for (const element of document.querySelectorAll("[data-state], .badge")) {
    if (!mute(element.textContent || "")) silent.push(element.outerHTML.slice(0, 120));
  }
  for (const bar of document.querySelectorAll(".bar")) {
    const words = bar.parentElement?.querySelector(".bar-words");
    if (!words || !mute(words.textContent || "")) silent.push(bar.outerHTML.slice(0, 120));
  }
  return silent;
}"""


@dataclass
class Visitor:
    """One person in one browser context, and what every page they see must pass."""

    page: Page
    origin: str
    shots: Path
    allowed_console: list[re.Pattern[str]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    visited: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.origin + "/ui" + path)

    def url(self) -> str:
        return self.page.url.removeprefix(self.origin)

    def check(self, name: str) -> Path:
        """The checks of every page, then its screenshot; returns the screenshot's path."""
        self.page.wait_for_load_state("networkidle")
        self.page.wait_for_function("() => !document.querySelector('[role=status].muted')")
        results = Axe().run(self.page)
        serious = [
            f"{item['id']} ({item['impact']}): {item['help']} at "
            + ", ".join(str(node["target"]) for node in item["nodes"][:3])
            for item in results.response["violations"]
            if item["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{name}: accessibility violations: {serious}"
        silent = self.page.evaluate(COLOUR_ONLY)
        assert silent == [], f"{name}: states told by colour alone: {silent}"
        self.keyboard_reaches_everything(name)
        self.visited.append(name)
        path = self.shots / f"{len(self.visited):02d}-{name}.png"
        self.page.evaluate("() => document.activeElement?.blur()")
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def keyboard_reaches_everything(self, name: str) -> None:
        controls = self.page.evaluate(MARK_FOCUSABLE, FOCUSABLE)
        reached: set[str] = set()
        self.page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
        self.page.locator("body").focus()
        for _ in range(len(controls) + 10):
            self.page.keyboard.press("Tab")
            index = self.page.evaluate("() => document.activeElement?.getAttribute('data-kb')")
            if index is not None:
                reached.add(index)
            if len(reached) == len(controls):
                break
        missing = [controls[int(i)] for i in range(len(controls)) if str(i) not in reached]
        assert missing == [], f"{name}: not reachable with Tab: {missing[:5]}"

    def finish(self) -> None:
        unexpected = [
            error
            for error in self.console_errors
            if not any(pattern.search(error) for pattern in self.allowed_console)
        ]
        assert unexpected == [], f"console errors: {unexpected}"
        assert self.foreign == [], f"requests to other origins: {self.foreign}"


@contextlib.contextmanager
def visitor(
    browser: Browser, dashboard: Dashboard, name: str, *, token: str | None = None
) -> Iterator[Visitor]:
    """A fresh browser context (its own cookies), signed in with ``token`` if given."""
    shots = ARTIFACTS / name
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    seen = Visitor(page, dashboard.origin, shots)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", console)
    page.on("pageerror", lambda error: seen.console_errors.append(f"page error: {error}"))

    def request(sent: Any) -> None:
        parts = urlsplit(sent.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        seen.requests.append((sent.method, parts.path))
        if f"{parts.scheme}://{parts.netloc}" != dashboard.origin:
            seen.foreign.append(sent.url)

    page.on("request", request)
    if token is not None:
        response = context.request.post(f"{dashboard.origin}/v1/session", data={"token": token})
        assert response.status == 200, response.text()
    try:
        yield seen
        seen.finish()
    finally:
        context.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def endpoint_veth(node: FleetNode, interface: str) -> None:
    """A host-side veth on ``node`` for an endpoint the policy datapath can attach to."""
    ip("link", "add", interface, "type", "veth", "peer", "name", f"{interface}p", netns=node.netns)
    ip("link", "set", interface, "up", netns=node.netns)
    ip("link", "set", f"{interface}p", "up", netns=node.netns)


__all__ = ["free_port"]
