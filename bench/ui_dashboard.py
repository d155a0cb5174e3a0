"""The dashboard with 10,000 nodes, in Chromium.

Targets (brief): the overview and the first page of nodes render in <= 1.5 s, with at
most 200 table rows in the DOM; initial JavaScript <= 250 kB gzip. Also measured: how
long the API takes to answer those two views, and how soon a change made through the
API shows on an open page (the dashboard polls every 2 s, with ETags).

One API process (uvicorn, SQLite) serves the built UI; the 10,000 nodes are seeded
straight into the database (registration is not what is measured), all heartbeating
"now". Chromium is Debian's, driven by Playwright, signed in as the admin.

    .venv/bin/python bench/ui_dashboard.py [--nodes 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpfleet_api import db
from bpfleet_api.models import Node, utcnow
from sqlmodel import Session

from tests import services
from tests.ui.conftest import CHROMIUM, CHROMIUM_FLAGS

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "ui" / "dist"
KERNELS = ["6.1.0-27-amd64", "6.6.58", "6.12.9", "6.18.44"]


def seed(database_url: str, count: int) -> None:
    engine = db.make_engine(database_url)
    db.migrate(engine)
    now = utcnow()
    with Session(engine) as session:
        for index in range(count):
            session.add(
                Node(
                    name=f"sim-{index:05d}",
                    labels={
                        "tier": "edge" if index % 4 else "core",
                        "zone": f"z{index % 10}",
                        "rack": f"r{index % 100:02d}",
                    },
                    kernel_release=KERNELS[index % len(KERNELS)],
                    last_heartbeat=now,
                    desired_revision=1,
                    applied_revision=1,
                )
            )
        session.commit()
    engine.dispose()


def bundle_sizes() -> tuple[float, float]:
    """(initial JS, all JS) in KiB gzip: the entry and its static imports, as built."""
    html = (DIST / "index.html").read_text()
    entry = re.findall(r'src="/ui/(assets/[^"]+\.js)"', html)
    preloads = re.findall(r'href="/ui/(assets/[^"]+\.js)"', html)
    initial = {*entry, *preloads}

    def kib(path: Path) -> float:
        return len(gzip.compress(path.read_bytes(), compresslevel=9)) / 1024

    everything = list((DIST / "assets").glob("*.js"))
    return sum(kib(DIST / name) for name in initial), sum(kib(path) for path in everything)


def rendered_at(page: Page, url: str, ready: str) -> float:
    """Milliseconds from navigation start until ``ready`` (a JS condition) holds."""
    page.goto(url, wait_until="commit")
    page.wait_for_function(ready, polling="raf", timeout=30_000)
    return float(page.evaluate("() => performance.now()"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    subprocess.run([str(REPO / "scripts" / "build-ui.sh")], check=True)
    initial, total = bundle_sizes()
    with tempfile.TemporaryDirectory(prefix="bpfleet-ui-bench-") as temporary:
        work = Path(temporary)
        database = f"sqlite:///{work}/bench.db"
        seed(database, arguments.nodes)
        trust = work / "trust"
        trust.mkdir()
        with (
            services.redis_server() as redis,
            services.api_server(database, redis.url, trust, work) as api,
            api.client() as client,
        ):
            timings: dict[str, list[float]] = {"overview": [], "nodes?limit=50": []}
            for _ in range(10):
                for path, params in (("overview", {}), ("nodes?limit=50", {"limit": 50})):
                    started = time.perf_counter()
                    response = client.get("/v1/" + path.split("?")[0], params=params)
                    timings[path].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                signed = context.request.post(
                    f"{api.url}/v1/session", data={"token": api.admin_token}
                )
                assert signed.status == 200
                page = context.new_page()
                overview_ready = (
                    "() => [...document.querySelectorAll('ul.counts strong')]"
                    f".some(e => e.textContent === '{arguments.nodes:,}')"
                )
                nodes_ready = "() => document.querySelectorAll('tbody tr').length === 50"
                overview, nodes, rows = [], [], []
                for _ in range(arguments.runs):
                    overview.append(rendered_at(page, f"{api.url}/ui/", overview_ready))
                    nodes.append(rendered_at(page, f"{api.url}/ui/nodes", nodes_ready))
                    rows.append(int(page.evaluate("() => document.querySelectorAll('tr').length")))
                # Live: a label changed through the API shows on the open page.
                page.goto(f"{api.url}/ui/nodes?selector=rack%3Dr07&sort=name")
                page.wait_for_function("() => document.querySelectorAll('tbody tr').length > 0")
                target = page.locator("tbody tr").first.locator("a").inner_text()
                live = []
                for attempt in range(5):
                    labels = {"tier": "edge", "zone": "z7", "rack": "r07", "mark": f"m{attempt}"}
                    started = time.perf_counter()
                    updated = client.put(f"/v1/nodes/{target}/labels", json={"labels": labels})
                    assert updated.status_code == 200, updated.text
                    page.wait_for_function(
                        f"() => document.body.textContent.includes('mark=m{attempt}')",
                        polling=50,
                        timeout=15_000,
                    )
                    live.append(time.perf_counter() - started)
                browser.close()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"nodes seeded: {arguments.nodes:,}")
    print(f"initial JS: {initial:.1f} KiB gzip (target <= 250 kB); all JS {total:.1f} KiB gzip")
    for path, values in timings.items():
        print(f"API GET /v1/{path}: median {median(values):.0f} ms, max {max(values):.0f} ms")
    print(
        f"overview rendered: median {median(overview):.0f} ms, max {max(overview):.0f} ms "
        f"(target <= 1500 ms, {arguments.runs} runs)"
    )
    print(
        f"first page of nodes rendered: median {median(nodes):.0f} ms, max {max(nodes):.0f} ms "
        f"(target <= 1500 ms)"
    )
    print(f"table rows in the DOM on the nodes page: {max(rows)} (target <= 200)")
    print(
        f"a change made through the API shown on the open page: median {median(live):.1f} s, "
        f"max {max(live):.1f} s (target <= 5 s)"
    )


if __name__ == "__main__":
    main()
