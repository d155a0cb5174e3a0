"""API fixtures: real Redis and PostgreSQL, the API under uvicorn, Celery workers.

The ``api`` fixture runs every test that uses it twice: on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(
    database_url: str,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[services.Api]:
    with services.api_server(
        database_url, redis.url, signed_catalog.trust, tmp_path_factory.mktemp("logs")
    ) as server:
        yield server


@pytest.fixture(scope="session")
def recorded_features() -> FeatureReport:
    """A real feature report recorded on a machine like this one."""
    return FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )


def upload(api: services.Api, catalog: SignedCatalog, name: str) -> dict[str, object]:
    files = catalog.files(name)
    with api.client() as client:
        response = client.post(
            "/v1/artifacts",
            files={
                "object": files.object.read_bytes(),
                "manifest": files.manifest.read_bytes(),
                "signature": files.signature.read_bytes(),
            },
        )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())
