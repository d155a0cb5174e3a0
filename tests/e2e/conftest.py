"""End-to-end fixtures: the API on a bridge, a Celery worker, real agents in namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bpfleet_cli.localfleet import Bridge, bridge
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog


@pytest.fixture(scope="module")
def network() -> Iterator[Bridge]:
    with bridge(subnet=213) as created:
        yield created


@pytest.fixture(params=["sqlite", "postgres"])
def api(
    network: Bridge,
    redis: services.Redis,
    postgres: services.Postgres,
    signed_catalog: SignedCatalog,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[services.Api]:
    """A fresh API per test (each test needs its own fleet state), on both databases."""
    database = (
        postgres.create_database()
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/bpfleet.db"
    )
    with services.api_server(
        database,
        redis.url,
        signed_catalog.trust,
        tmp_path,
        host=network.address,
        rollout_tick_seconds="0.3",
    ) as server:
        yield server


def uploaded(api: services.Api, catalog: SignedCatalog, *names: str) -> dict[str, dict[str, Any]]:
    return {name: upload(api, catalog, name) for name in names}


def program(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/v1/programs/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())
