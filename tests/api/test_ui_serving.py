"""The API serves the built dashboard under /ui: the page for any view's URL, hashed
assets cached for good, nothing outside the build, and a policy that lets the page
reach nothing but this origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    (dist / "assets").mkdir()
    (dist / "index.html").write_text("<!doctype html><title>bpfleet</title><div id=root></div>")
    (dist / "assets" / "index-abc123.js").write_text("console.log('ui')")
    (dist / "favicon.svg").write_text("<svg/>")
    (dist.parent / "secret.txt").write_text("not for the browser")
    return dist


@pytest.fixture(scope="module")
def server(
    built: Path,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[services.Api]:
    logs = tmp_path_factory.mktemp("logs")
    with services.api_server(
        f"sqlite:///{logs}/ui.db", redis.url, signed_catalog.trust, logs, ui_dir=str(built)
    ) as api:
        yield api


def test_every_view_url_gets_the_page_with_a_same_origin_policy(server: services.Api) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        home = browser.get("/")
        assert home.status_code == 307
        assert home.headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/nodes", "/ui/programs/execs?tab=events", "/ui/x/y/z"):
            page = browser.get(path)
            assert page.status_code == 200, path
            assert "<div id=root>" in page.text
            assert page.headers["cache-control"] == "no-cache"
            policy = page.headers["content-security-policy"]
            assert "default-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
            assert page.headers["x-content-type-options"] == "nosniff"
        asset = browser.get("/ui/assets/index-abc123.js")
        assert asset.status_code == 200
        assert "immutable" in asset.headers["cache-control"]
        assert "default-src 'self'" in asset.headers["content-security-policy"]
        assert browser.get("/ui/favicon.svg").text == "<svg/>"
        # A missing asset is a 404, not the page (a stale tab must not run HTML as JS).
        assert browser.get("/ui/assets/index-old.js").status_code == 404
        for escape in ("/ui/assets/../../secret.txt", "/ui/assets/%2e%2e/%2e%2e/secret.txt"):
            response = browser.get(escape)
            assert "not for the browser" not in response.text, escape
        # The page is public (it holds no data); the API behind it is not.
        assert browser.get("/v1/nodes").status_code == 401


def test_an_unbuilt_dashboard_says_how_to_build_it(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    with (
        services.api_server(
            f"sqlite:///{tmp_path}/ui.db",
            redis.url,
            signed_catalog.trust,
            tmp_path,
            ui_dir=str(tmp_path / "nothing"),
        ) as api,
        httpx.Client(base_url=api.url, timeout=10) as browser,
        api.client() as reader,
    ):
        page = browser.get("/ui/")
        assert page.status_code == 503
        assert "make ui" in page.json()["detail"]
        # The schema is for readers (the page is open, the API's description is not).
        schema = reader.get("/openapi.json")
        assert schema.status_code == 200, schema.text
        assert not any(path.startswith("/ui") for path in schema.json()["paths"])
