"""bpfleet-healthcheck's reading of what a container runs (pure; the checks themselves
run in the images, tests/images/test_components.py)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.images.conftest import REPO


def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "images" / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("command", "component"),
    [
        (["/opt/bpfleet/bin/python", "/opt/bpfleet/bin/uvicorn", "bpfleet_api.main:app"], "api"),
        (["celery", "--app=bpfleet_api.tasks", "worker", "--concurrency=2"], "worker"),
        (["/opt/bpfleet/bin/python", "/opt/bpfleet/bin/bpfleet-agent"], "agent"),
        (["/opt/bpfleet/bin/python", "/opt/bpfleet/bin/bpfleet", "operator", "run"], "operator"),
        (["/sbin/init"], None),
        ([], None),
    ],
)
def test_the_component_is_read_from_the_main_command(
    command: list[str], component: str | None
) -> None:
    assert healthcheck().component_of(command) == component


def test_the_api_port_and_scheme_come_from_its_command() -> None:
    module = healthcheck()
    command = ["uvicorn", "app", "--host=0.0.0.0", "--port=8443", "--ssl-certfile", "/tls.crt"]
    assert module.option(command, "--port") == "8443"
    assert module.option(command, "--ssl-certfile") == "/tls.crt"
    assert module.option(command, "--ssl-keyfile") is None


def test_an_unknown_component_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck().main(["database"]) == 2
    assert "bpfleet-healthcheck [api|worker|agent|operator]" in capsys.readouterr().err
