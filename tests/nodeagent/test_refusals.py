"""What must never reach the kernel: incompatible objects and untrusted artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfleet_agent.daemon import Agent
from bpfleet_core import artifacts, signing
from tests.conftest import SignedCatalog
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, in_netns, veth_pair

pytestmark = pytest.mark.bpf

REPO = Path(__file__).resolve().parents[2]


def run_once_under_strace(
    env: AgentEnv, trace: Path, netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``bpfleet agent run --once`` with every bpf() call it makes written to ``trace``."""
    bpfleet = shutil.which("bpfleet", path=str(REPO / ".venv" / "bin")) or "bpfleet"
    command = ["strace", "-f", "-e", "trace=bpf", "-o", str(trace), bpfleet, "agent", "run"]
    return subprocess.run(
        [*(in_netns(netns) if netns else []), *command, "--once"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env.environment()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_nothing_loaded(trace: Path) -> None:
    calls = trace.read_text()
    assert "BPF_OBJ_GET" in calls or "BPF_ENABLE_STATS" in calls  # strace did see bpf()
    assert "BPF_PROG_LOAD" not in calls
    assert "BPF_MAP_CREATE" not in calls


def test_incompatible_objects_are_reported_and_never_loaded(
    agent_env: AgentEnv, tmp_path: Path
) -> None:
    agent_env.write_desired(
        program(
            "unlink", "fentry_unlink", "1.0.0", {"entryPoint": "trace_unlink", "type": "fentry"}
        ),
        program(
            "connect", "kprobe_connect", "1.0.0", {"entryPoint": "trace_connect", "type": "kprobe"}
        ),
    )
    trace = tmp_path / "bpf.strace"
    result = run_once_under_strace(agent_env, trace)
    assert result.returncode == 0, result.stderr
    report = {p["name"]: p for p in json.loads(result.stdout)["programs"]}
    assert report["unlink"]["state"] == "Incompatible"
    assert "kernel lacks program type tracing" in report["unlink"]["message"]
    assert report["connect"]["state"] == "Incompatible"
    assert "kernel cannot attach kprobe programs" in report["connect"]["message"]
    assert_nothing_loaded(trace)


def _tamper(catalog: SignedCatalog, destination: Path, how: str) -> None:
    """Copy the xdp_counter artifact into ``destination``, spoiled in one way."""
    # "renamed": another validly signed artifact, posing as xdp_counter.
    source = catalog.files("tc_counter" if how == "renamed" else "xdp_counter")
    files = artifacts.ArtifactFiles.in_directory(destination, "xdp_counter")
    destination.mkdir(parents=True)
    for name in ("object", "manifest", "signature"):
        shutil.copyfile(getattr(source, name), getattr(files, name))
    match how:
        case "unsigned":
            files.signature.unlink()
        case "wrong-key":
            other = destination / "other.key"
            signing.generate_key_pair(other, destination / "other.pub")
            files.signature.write_bytes(
                signing.sign(files.manifest.read_bytes(), signing.load_private_key(other))
            )
        case "tampered-object":
            data = bytearray(files.object.read_bytes())
            data[-1] ^= 0xFF
            files.object.write_bytes(bytes(data))
        case "tampered-manifest":
            files.manifest.write_bytes(
                files.manifest.read_bytes().replace(b'"license":"Dual BSD/GPL"', b'"license":"GPL"')
            )


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("unsigned", "Unsigned"),
        ("wrong-key", "BadSignature"),
        ("tampered-object", "ObjectDigestMismatch"),
        ("tampered-manifest", "BadSignature"),
        ("renamed", "ArtifactNameMismatch"),
    ],
)
def test_untrusted_artifacts_are_rejected_and_others_untouched(
    agent_env: AgentEnv, tmp_path: Path, how: str, reason: str
) -> None:
    spoiled = tmp_path / "spoiled"
    _tamper(agent_env.catalog, spoiled, how)
    with veth_pair(subnet=83) as pair, entered(pair.left):
        counter = program(
            "tc",
            "tc_counter",
            "1.0.0",
            {
                "entryPoint": "tc_ingress",
                "type": "tc",
                "direction": "ingress",
                "interfaces": [pair.left_if],
            },
        )
        agent_env.write_desired(counter)
        agent = Agent(agent_env.settings())
        before = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}
        assert before["tc"].state == "Attached"

        agent_env.artifact_dirs.insert(0, spoiled)
        agent_env.write_desired(
            counter,
            program(
                "xdp",
                "xdp_counter",
                "1.0.0",
                {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [pair.left_if]},
            ),
        )
        # The running tc program is adopted, the spoiled one refused: no load at all.
        trace = tmp_path / "bpf.strace"
        result = run_once_under_strace(agent_env, trace, netns=pair.left)
    assert result.returncode == 0, result.stderr
    after = {p["name"]: p for p in json.loads(result.stdout)["programs"]}
    assert after["xdp"]["state"] == "SignatureRejected"
    assert after["xdp"]["reason"] == reason
    assert after["xdp"]["programIds"] == {}
    assert not (agent_env.pin_root / "xdp").exists()
    assert after["tc"]["state"] == "Attached"
    assert after["tc"]["programIds"] == before["tc"].program_ids
    assert_nothing_loaded(trace)
