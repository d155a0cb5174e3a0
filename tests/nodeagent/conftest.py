"""Agent fixtures: a private pin root, state directory and desired-state file per test."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfleet_core.features import FeatureReport
from tests import services
from tests.conftest import SignedCatalog, bpf_unavailable

BPFFS_TEST_ROOT = Path("/sys/fs/bpf")


@pytest.fixture(scope="session")
def feature_report() -> FeatureReport:
    if bpf_unavailable():
        pytest.skip(f"BPF unavailable: {bpf_unavailable()}")
    from bpfleet_agent import mounts, probing

    mounts.ensure_bpffs(BPFFS_TEST_ROOT / "bpfleet")
    return probing.probe(
        "test-node", BPFFS_TEST_ROOT, mounts.ensure_tracefs(), mounts.ensure_cgroup2()
    )


@dataclass
class AgentEnv:
    pin_root: Path
    state_dir: Path
    desired_file: Path
    catalog: SignedCatalog
    artifact_dirs: list[Path]

    def environment(self) -> dict[str, str]:
        """The agent's settings as environment variables, for agent subprocesses."""
        return {
            "BPFLEET_AGENT_NODE_NAME": "test-node",
            "BPFLEET_AGENT_PIN_ROOT": str(self.pin_root),
            "BPFLEET_AGENT_STATE_DIR": str(self.state_dir),
            "BPFLEET_AGENT_DESIRED_STATE": str(self.desired_file),
            "BPFLEET_AGENT_ARTIFACT_DIRS": ":".join(str(d) for d in self.artifact_dirs),
            "BPFLEET_AGENT_TRUST": str(self.catalog.trust),
            "BPFLEET_AGENT_POLL_INTERVAL": "0.3",
        }

    def settings(self) -> Any:
        from bpfleet_agent.settings import AgentSettings

        return AgentSettings(
            node_name="test-node",
            pin_root=self.pin_root,
            state_dir=self.state_dir,
            desired_state=self.desired_file,
            artifact_dirs=self.artifact_dirs,
            trust=[self.catalog.trust],
            poll_interval=0.3,
        )

    def write_desired(self, *programs: dict[str, Any], revision: int = 1) -> None:
        self.desired_file.write_text(
            yaml.safe_dump({"revision": revision, "programs": list(programs)})
        )


def program(
    name: str, artifact: str, version: str, *attach: dict[str, Any], **config: Any
) -> dict[str, Any]:
    """A desired-state entry, as a user writes it."""
    spec: dict[str, Any] = {
        "artifact": {"name": artifact, "version": version},
        "attach": list(attach),
    }
    if config:
        spec["config"] = config
    return {"name": name, "spec": spec}


@pytest.fixture
def agent_env(
    signed_catalog: SignedCatalog, tmp_path: Path, feature_report: FeatureReport
) -> Iterator[AgentEnv]:
    pin_root = BPFFS_TEST_ROOT / f"bpfleet-test-{uuid.uuid4().hex[:8]}"
    env = AgentEnv(
        pin_root,
        tmp_path / "state",
        tmp_path / "desired.yaml",
        signed_catalog,
        [signed_catalog.directory],
    )
    env.state_dir.mkdir()
    (env.state_dir / "features.json").write_text(feature_report.to_json())
    yield env
    from bpfleet_agent import loading, mounts

    kernel = loading.Kernel(pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
    if pin_root.exists():
        for program_dir in pin_root.iterdir():
            loading.remove(kernel, program_dir.name)
        shutil.rmtree(pin_root, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet_api(
    signed_catalog: SignedCatalog, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.Api]:
    """The real fleet API under uvicorn (SQLite), with Redis and a Celery worker, for a
    module's agents to talk to."""
    database = f"sqlite:///{tmp_path_factory.mktemp('db')}/bpfleet.db"
    with (
        services.redis_server() as redis,
        services.api_server(
            database, redis.url, signed_catalog.trust, tmp_path_factory.mktemp("logs")
        ) as server,
    ):
        server.start_worker()
        yield server
