"""Bad input yields a clear state and message, never a traceback, and harms nothing else."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from bpfleet_agent.daemon import Agent
from tests.conftest import sign_object
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, veth_pair
from tests.polling import wait_for

pytestmark = pytest.mark.bpf


def tc_program(interface: str) -> dict[str, Any]:
    return program(
        "tc",
        "tc_counter",
        "1.0.0",
        {
            "entryPoint": "tc_ingress",
            "type": "tc",
            "direction": "ingress",
            "interfaces": [interface],
        },
    )


@pytest.fixture
def broken_elf(agent_env: AgentEnv, tmp_path: Path) -> Path:
    """A signed artifact whose object is not an ELF: the signature is fine, the bytes are not."""
    directory = tmp_path / "broken"
    garbage = tmp_path / "garbage.bpf.o"
    garbage.write_bytes(b"\x7fELF" + b"\0" * 60)
    # Sign the real tc_counter manifest shape over garbage bytes by analysing a real object,
    # then swapping the object and re-signing: the agent must fail at open, not crash.
    sign_object(
        agent_env.catalog.files("tc_counter").object,
        directory,
        "broken",
        "1.0.0",
        agent_env.catalog.private_key,
    )
    from bpfleet_core import artifacts, manifests

    files = artifacts.ArtifactFiles.in_directory(directory, "broken")
    files.object.write_bytes(garbage.read_bytes())
    manifest = manifests.parse(files.manifest.read_bytes())
    manifest = manifest.model_copy(
        update={
            "object": manifest.object.model_copy(
                update={"sha256": artifacts.sha256_file(files.object), "size": 64}
            )
        }
    )
    artifacts.write_signed(manifest, files, agent_env.catalog.private_key)
    return directory


CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    (
        "missing-artifact",
        program(
            "ghost",
            "no_such_program",
            "1.0.0",
            {"entryPoint": "x", "type": "xdp", "interfaces": ["lo"]},
        ),
        "LoadFailed",
        "ArtifactNotFound",
        "artifact no_such_program@1.0.0 is in none of",
    ),
    (
        "unknown-attach-type",
        program(
            "odd",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "xdp_count", "type": "socket_magic", "interfaces": ["lo"]},
        ),
        "Invalid",
        "InvalidSpec",
        "spec.attach.0.type: Input should be",
    ),
    (
        "wrong-entry-point",
        program(
            "odd",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "nope", "type": "xdp", "interfaces": ["lo"]},
        ),
        "Invalid",
        "InvalidAttachSpec",
        "xdp_counter has no entry point 'nope' (it has: xdp_count)",
    ),
    (
        "entry-point-of-another-kind",
        program(
            "odd",
            "tc_counter",
            "1.0.0",
            {"entryPoint": "tc_ingress", "type": "xdp", "interfaces": ["lo"]},
        ),
        "Invalid",
        "InvalidAttachSpec",
        "attaches as tc, not as xdp",
    ),
    (
        "unknown-config",
        program(
            "odd",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "xdp_count", "type": "xdp", "interfaces": ["lo"]},
            colour=3,
        ),
        "Invalid",
        "InvalidConfig",
        "xdp_counter has no config variable 'colour'",
    ),
    (
        "config-out-of-range",
        program(
            "odd",
            "tc_counter",
            "1.0.0",
            {
                "entryPoint": "tc_ingress",
                "type": "tc",
                "direction": "ingress",
                "interfaces": ["lo"],
            },
            only_ethertype=70000,
        ),
        "Invalid",
        "InvalidConfig",
        "does not fit 2 byte(s)",
    ),
    (
        "missing-interface",
        program(
            "odd",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "xdp_count", "type": "xdp", "interfaces": ["nosuch0"]},
        ),
        "AttachFailed",
        "AttachError",
        "interface nosuch0 does not exist on this node",
    ),
    (
        "broken-elf",
        program(
            "odd",
            "broken",
            "1.0.0",
            {
                "entryPoint": "tc_ingress",
                "type": "tc",
                "direction": "ingress",
                "interfaces": ["lo"],
            },
        ),
        "LoadFailed",
        "LoadError",
        "cannot open broken.bpf.o",
    ),
]


@pytest.mark.parametrize(
    ("case", "entry", "state", "reason", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_program_is_reported_and_others_keep_running(
    agent_env: AgentEnv,
    broken_elf: Path,
    case: str,
    entry: dict[str, Any],
    state: str,
    reason: str,
    message: str,
) -> None:
    agent_env.artifact_dirs.append(broken_elf)
    with veth_pair(subnet=86) as pair, entered(pair.left):
        agent = Agent(agent_env.settings())
        agent_env.write_desired(tc_program(pair.left_if))
        before = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}["tc"]
        agent_env.write_desired(tc_program(pair.left_if), entry, revision=2)
        after = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}
    bad = after[entry["name"]]
    assert (bad.state, bad.reason) == (state, reason), bad.message
    assert message in bad.message
    assert not (agent_env.pin_root / entry["name"]).exists()
    assert after["tc"].state == "Attached"
    assert after["tc"].program_ids == before.program_ids
    assert [link.link_id for link in after["tc"].links] == [link.link_id for link in before.links]


def test_unreadable_desired_state_changes_nothing(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=87) as pair, entered(pair.left):
        agent = Agent(agent_env.settings())
        agent_env.write_desired(tc_program(pair.left_if))
        before = agent.reconcile_file(agent_env.desired_file)
        agent_env.desired_file.write_text("programs: [unclosed\n")
        after = agent.reconcile_file(agent_env.desired_file)
        agent_env.desired_file.unlink()
        gone = agent.reconcile_file(agent_env.desired_file)
    assert "not valid YAML" in after.error
    assert "No such file" in gone.error
    for report in (after, gone):
        assert [(p.name, p.state, p.program_ids) for p in report.programs] == [
            (p.name, p.state, p.program_ids) for p in before.programs
        ]
    assert (agent_env.pin_root / "tc").exists()


def test_broken_change_to_a_running_program_keeps_the_running_version(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=88) as pair, entered(pair.left):
        agent = Agent(agent_env.settings())
        agent_env.write_desired(tc_program(pair.left_if))
        before = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}["tc"]
        broken = program(
            "tc",
            "tc_counter",
            "1.0.0",
            {
                "entryPoint": "tc_ingress",
                "type": "tc",
                "direction": "ingress",
                "interfaces": ["nosuch1"],
            },
        )
        agent_env.write_desired(broken, revision=2)
        after = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}["tc"]
        from bpfleet_agent import loading, mounts

        observed = loading.observe(
            loading.Kernel(agent_env.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
        )["tc"]
    assert after.state == "AttachFailed"
    assert "the previous version stays attached" in after.message
    assert {link.link_id for link in observed.links.values()} == {
        link.link_id for link in before.links
    }
    # ...and each link still runs the program it ran before.
    assert {link.name: link.program_id for link in observed.links.values()} == {
        link.name: before.program_ids[link.entry_point] for link in before.links
    }


def test_a_desired_state_file_that_is_not_text_changes_nothing(agent_env: AgentEnv) -> None:
    agent = Agent(agent_env.settings())
    agent_env.write_desired(
        program("execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"})
    )
    before = agent.reconcile_file(agent_env.desired_file)
    agent_env.desired_file.write_bytes(b"\xff\xfeprograms: []\n")
    after = agent.reconcile_file(agent_env.desired_file)
    assert "not UTF-8 text" in after.error
    assert [(p.name, p.state) for p in after.programs] == [
        (p.name, p.state) for p in before.programs
    ]


def test_a_pass_that_fails_is_reported_and_the_loop_goes_on(agent_env: AgentEnv) -> None:
    """Whatever breaks one pass (here: the status file cannot be written), the agent
    logs it, keeps what runs and tries again on the next pass."""
    settings = agent_env.settings()
    agent_env.write_desired(
        program("execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"})
    )
    settings.state_dir.mkdir(exist_ok=True)
    blocker = settings.status_file / "in-the-way"
    blocker.mkdir(parents=True)  # a directory where the status file goes: every write fails
    agent = Agent(settings)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_for((agent_env.pin_root / "execs").exists, 60, "execs attached")
        stop.wait(5 * settings.poll_interval)  # passes that fail at the very end
        assert loop.is_alive(), "a failing pass ended the agent"
        shutil.rmtree(settings.status_file)
        status = wait_for(
            lambda: settings.status_file.is_file() and json.loads(settings.status_file.read_text()),
            60,
            "the status file, once it can be written",
        )
        assert [(p["name"], p["state"]) for p in status["programs"]] == [("execs", "Attached")]
    finally:
        stop.set()
        loop.join(30)
