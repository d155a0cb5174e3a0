"""A local fleet for the fleet commands: the API, a worker and three real agents, one per
test module (starting them is the slow part); and ``bpfleet`` run as CI runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfleet_cli.client import FleetClient
from bpfleet_cli.localfleet import Bridge, FleetNode, bridge, local_fleet
from bpfleet_core import signing
from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog
from tests.polling import wait_for

BPFLEET = str(Path(sys.executable).parent / "bpfleet")
REPO = Path(__file__).resolve().parents[2]
# 10.214 is `make up`'s and 10.213 the e2e tests': a bridge of its own, so runs can overlap.
SUBNET = 216
LABELS = [{"tier": "edge", "zone": "a"}, {"tier": "edge", "zone": "b"}, {"tier": "core"}]


def feature_report(*, ringbuf: bool = True) -> dict[str, Any]:
    """This machine's kind of report (so agents start without probing), optionally a kernel
    without ring buffers: the node then stands for an older kernel."""
    report = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    report = report.model_copy(
        update={
            "kernel_release": os.uname().release,
            "map_types": {**report.map_types, "ringbuf": ringbuf},
        }
    )
    return dict(json.loads(report.to_json()))


@dataclass
class Fleet:
    api: services.Api
    nodes: list[FleetNode]
    trust: Path  # the directory of public keys the API and the agents trust
    ci_key: Path  # a private key the fleet trusts, as a CI job's signing key
    home: Path  # XDG_CONFIG_HOME for the commands: no context unless a test logs in

    def client(self, token: str | None = None) -> FleetClient:
        return FleetClient(self.api.url, token or self.api.admin_token)

    def environment(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.home),
            "BPFLEET_API_URL": self.api.url,
            "BPFLEET_TOKEN": token or self.api.admin_token,
            **extra,
        }

    def run(
        self,
        *args: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BPFLEET, *args],
            env=env if env is not None else self.environment(token),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )

    def mint(self, role: str, name: str) -> str:
        with self.api.client() as http:
            response = http.post("/v1/tokens", json={"name": name, "role": role})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])


@pytest.fixture(scope="module")
def network() -> Iterator[Bridge]:
    with bridge(subnet=SUBNET) as created:
        yield created


@pytest.fixture(scope="module")
def fleet(
    network: Bridge,
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Three agents (node 2 with a kernel that lacks ring buffers), the API on SQLite
    (tests/api runs the API on both databases) and one worker; an admin gives each node
    its pod CIDR (node i: ``10.216.<i+1>.0/24``) and the shop namespace its labels."""
    work = tmp_path_factory.mktemp("fleet")
    trust = work / "trust"
    trust.mkdir()
    for key in signed_catalog.trust.glob("*.pub"):
        shutil.copy(key, trust / key.name)
    ci_key = work / "ci" / "signing.key"
    signing.generate_key_pair(ci_key, trust / "ci.pub")
    with services.api_server(
        f"sqlite:///{work}/bpfleet.db",
        redis.url,
        trust,
        work,
        host=network.address,
        rollout_tick_seconds="0.3",
        session_ttl_seconds="1",
    ) as api:
        api.start_worker()
        features = {0: feature_report(), 1: feature_report(), 2: feature_report(ringbuf=False)}
        with local_fleet(
            api.url,
            api.bootstrap_token,
            network,
            trust=trust,
            work=work / "agents",
            labels=LABELS,
            features=features,
            admin_token=api.admin_token,
            namespaces={"shop": {"team": "shop"}},
        ) as nodes:
            names = {node.name for node in nodes}
            with FleetClient(api.url, api.admin_token) as client:
                wait_for(
                    lambda: names <= {node.name for node in client.nodes()},
                    90,
                    "agents to register",
                )
            home = work / "home"
            home.mkdir()
            yield Fleet(api, nodes, trust, ci_key, home)
