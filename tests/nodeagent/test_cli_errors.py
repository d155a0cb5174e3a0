"""``bpfleet`` reports expected failures in one line on stderr and exits 1: no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodeagent.conftest import AgentEnv

REPO = Path(__file__).resolve().parents[2]
BPFLEET = REPO / ".venv" / "bin" / "bpfleet"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BPFLEET), *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_with(failure: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, with ``probing.probe`` raising ``failure`` (a Python expression)."""
    script = (
        "import subprocess, sys\n"
        "from bpfleet_agent import probing\n"
        "def probe(*_args, **_kwargs):\n"
        f"    raise {failure}\n"
        "probing.probe = probe\n"
        "from bpfleet_cli.main import run\n"
        f"sys.argv = ['bpfleet', *{list(args)!r}]\n"
        "run()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bpfleet: ")
    for text in expected:
        assert text in lines[0]


def test_corrupt_status_file(tmp_path: Path) -> None:
    env = {"BPFLEET_AGENT_STATE_DIR": str(tmp_path)}
    (tmp_path / "status.json").write_text('{"programs": [')
    assert_one_line_failure(run_cli("agent", "status", env=env), "is not valid JSON")
    (tmp_path / "status.json").write_text("[1, 2]")
    assert_one_line_failure(run_cli("agent", "status", env=env), "is not a status document")


def test_invalid_settings(tmp_path: Path) -> None:
    env = {"BPFLEET_AGENT_STATE_DIR": str(tmp_path), "BPFLEET_AGENT_POLL_INTERVAL": "-1"}
    assert_one_line_failure(
        run_cli("agent", "status", env=env), "invalid AgentSettings", "poll_interval"
    )


def test_an_existing_private_key_is_kept(tmp_path: Path) -> None:
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    assert run_cli("keys", "generate", str(private), str(public)).returncode == 0
    before = private.read_bytes()
    result = run_cli("keys", "generate", str(private), str(public))
    assert_one_line_failure(result, "refusing to overwrite a private key")
    assert private.read_bytes() == before


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("probing.ProbeError('feature probe failed: no netns')", "feature probe failed"),
        ("subprocess.TimeoutExpired(['probe'], 120)", "timed out after 120 seconds"),
    ],
)
def test_probe_failures(failure: str, expected: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("node features mounts bpffs first: needs root")
    assert_one_line_failure(run_with(failure, "node", "features"), expected)


@pytest.mark.bpf
def test_missing_trust_directory(agent_env: AgentEnv, tmp_path: Path) -> None:
    env = {**agent_env.environment(), "BPFLEET_AGENT_TRUST": str(tmp_path / "no-such-trust")}
    agent_env.write_desired()
    result = run_cli("agent", "run", "--once", env=env)
    assert_one_line_failure(result, "cannot read public key", "no-such-trust")


@pytest.mark.bpf
def test_a_bpffs_mount_point_as_pin_root(agent_env: AgentEnv) -> None:
    env = {**agent_env.environment(), "BPFLEET_AGENT_PIN_ROOT": "/sys/fs/bpf"}
    agent_env.write_desired()
    result = run_cli("agent", "run", "--once", env=env)
    assert_one_line_failure(result, "/sys/fs/bpf is a bpffs mount point")
