"""Where a signed program may run on this node: the constraints its signer set, checked
again here, and what this node permits whatever the API asks (hooks, versions, and only
the netpol artifact as the policy datapath)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_agent.artifact_cache import ArtifactCache
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.daemon import Agent
from bpfleet_agent.permits import NodePermits, version_key
from bpfleet_agent.reconciling import Hook
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, files, fitting
from bpfleet_core.manifests import AttachKind
from bpfleet_core.protocol import PolicyState, ProgramState, Registration
from tests.conftest import sign_object
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.hostile import hostile_api
from tests.nodeagent.netns import entered, veth_pair

# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("hook", "complaint"),
    [
        (Hook("e", AttachKind.CGROUP_SKB, "/", "ingress"), "no hooks in cgroup /"),
        (Hook("e", AttachKind.XDP, "wlan0"), "no hooks on interface wlan0"),
        (Hook("e", AttachKind.TRACEPOINT, "sched/sched_switch"), "no tracepoint hooks"),
    ],
)
def test_hooks_outside_the_node_permits_are_named(hook: Hook, complaint: str) -> None:
    permits = NodePermits(
        attach_kinds=frozenset({AttachKind.XDP, AttachKind.CGROUP_SKB}),
        interfaces=("eth*",),
    )
    (problem,) = permits.hook_problems([hook])
    assert complaint in problem
    assert "BPFLEET_AGENT_ALLOWED_" in problem, "the message names the setting"


def test_by_default_every_hook_but_the_root_cgroup_is_permitted() -> None:
    permits = NodePermits()
    allowed = [
        Hook("e", AttachKind.XDP, "eth0"),
        Hook("e", AttachKind.TC, "veth1234", "ingress"),
        Hook("e", AttachKind.CGROUP_SKB, "/kubepods.slice/pod1", "egress"),
        Hook("e", AttachKind.TRACEPOINT, "sched/sched_process_exec"),
        Hook("e", AttachKind.RAW_TRACEPOINT, "sys_enter"),
    ]
    assert permits.hook_problems(allowed) == []
    assert permits.hook_problems([Hook("e", AttachKind.CGROUP_SKB, "/", "ingress")]) != []
    rooted = NodePermits(cgroups=("/",))
    assert rooted.hook_problems([Hook("e", AttachKind.CGROUP_SKB, "/", "ingress")]) == []


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.0", "1.10.0"),
        ("1.0.0-rc1", "1.0.0"),
        ("1.0.0-rc1", "1.0.0-rc2"),
        ("0.9", "1.0.0+build7"),
        ("v1.2", "1.3"),
    ],
)
def test_versions_are_ordered_by_their_release_numbers(older: str, newer: str) -> None:
    low, high = version_key(older), version_key(newer)
    assert low is not None
    assert high is not None
    assert low < high
    assert version_key("1.0") == version_key("1.0.0")
    assert version_key("latest") is None


def test_a_version_below_the_node_floor_is_refused_and_one_that_cannot_be_ordered_too() -> None:
    permits = NodePermits(minimum_versions={"netpol": "1.2.0"})
    assert permits.version_problem("netpol", "1.2.0") is None
    assert permits.version_problem("netpol", "1.10.0") is None
    assert permits.version_problem("xdp_counter", "0.0.1") is None, "no floor for it"
    older = permits.version_problem("netpol", "1.1.9")
    assert older is not None
    assert "older than this node's minimum 1.2.0" in older
    unordered = permits.version_problem("netpol", "nightly")
    assert unordered is not None
    assert "cannot be ordered" in unordered


def test_the_permits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = AgentSettings(node_name="n")
    assert set(defaults.allowed_attach_kinds) == fitting.ATTACHABLE_KINDS
    assert defaults.allowed_interfaces == ["*"]
    assert defaults.allowed_cgroups == ["/*"], "every cgroup but the root"
    assert defaults.minimum_versions == {}
    assert not defaults.detach_untrusted
    monkeypatch.setenv("BPFLEET_AGENT_ALLOWED_ATTACH_KINDS", "xdp, tracepoint")
    monkeypatch.setenv("BPFLEET_AGENT_ALLOWED_INTERFACES", "eth*,ens*")
    monkeypatch.setenv("BPFLEET_AGENT_ALLOWED_CGROUPS", "/kubepods.slice,/system.slice/*.service")
    monkeypatch.setenv("BPFLEET_AGENT_MINIMUM_VERSIONS", "netpol=1.2.0,execsnoop=2")
    monkeypatch.setenv("BPFLEET_AGENT_DETACH_UNTRUSTED", "true")
    settings = AgentSettings(node_name="n")
    assert settings.allowed_attach_kinds == [AttachKind.XDP, AttachKind.TRACEPOINT]
    assert settings.allowed_interfaces == ["eth*", "ens*"]
    assert settings.allowed_cgroups == ["/kubepods.slice", "/system.slice/*.service"]
    assert settings.minimum_versions == {"netpol": "1.2.0", "execsnoop": "2"}
    assert settings.detach_untrusted


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("allowed_attach_kinds", "xdp,kprobe", "cannot attach kprobe"),
        ("allowed_attach_kinds", "xdp,teleport", "Input should be"),
        ("minimum_versions", "netpol=latest", "does not start with a release number"),
        ("minimum_versions", "Net Pol=1.0", "not an artifact name"),
    ],
)
def test_permits_that_cannot_work_are_refused_at_start(
    field: str, value: str, complaint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"BPFLEET_AGENT_{field.upper()}", value)
    with pytest.raises(ValidationError, match=complaint):
        AgentSettings(node_name="n")


# ----------------------------------------------------------------------------- real eBPF


def cgroup_program(name: str, artifact: str, cgroup: str) -> dict[str, Any]:
    return program(
        name,
        artifact,
        "1.0.0",
        {"entryPoint": "cgroup_ingress", "type": "cgroup_skb", "cgroup": cgroup},
    )


def _unconstrained_cgroup_counter(env: AgentEnv, tmp_path: Path) -> None:
    """The catalog constrains cgroup_counter itself; a copy signed without constraints
    shows what this node permits on its own."""
    directory = tmp_path / "unconstrained"
    sign_object(
        env.catalog.files("cgroup_counter").object,
        directory,
        "cgroup_counter",
        "1.0.0",
        env.catalog.private_key,
    )
    env.artifact_dirs.insert(0, directory)


@pytest.mark.bpf
@pytest.mark.parametrize("root", ["/", "/./", "//"])
def test_the_root_cgroup_is_refused_unless_this_node_permits_it(
    agent_env: AgentEnv, tmp_path: Path, root: str
) -> None:
    _unconstrained_cgroup_counter(agent_env, tmp_path)
    agent_env.write_desired(cgroup_program("whole-host", "cgroup_counter", root))
    agent = Agent(agent_env.settings())
    (refused,) = agent.reconcile_file(agent_env.desired_file).programs
    assert (refused.state, refused.reason) == (ProgramState.INVALID, "NotPermittedOnThisNode")
    assert "no hooks in cgroup / (BPFLEET_AGENT_ALLOWED_CGROUPS: /*)" in refused.message
    assert not (agent_env.pin_root / "whole-host").exists()

    permitted = agent_env.settings().model_copy(update={"allowed_cgroups": ["/"]})
    (attached,) = Agent(permitted).reconcile_file(agent_env.desired_file).programs
    assert attached.state == ProgramState.ATTACHED, attached.message
    assert [link.hook for link in attached.links] == ["cgroup_skb ingress on /"]


@pytest.mark.bpf
def test_the_agent_checks_the_signed_constraints_again(agent_env: AgentEnv) -> None:
    """The catalog signs cgroup_counter for cgroups below the root and execsnoop for
    uids from -1; an API that asks otherwise is refused by the node too."""
    agent_env.write_desired(
        cgroup_program("whole-host", "cgroup_counter", "/"),
        program(
            "execs",
            "execsnoop",
            "1.0.0",
            {"entryPoint": "handle_exec", "type": "tracepoint"},
            target_uid=-5,
        ),
        program(
            "forks",
            "execsnoop",
            "1.0.0",
            {"entryPoint": "handle_exec", "type": "tracepoint", "target": "sched/sched_switch"},
        ),
    )
    permissive = agent_env.settings().model_copy(update={"allowed_cgroups": ["/"]})
    report = {p.name: p for p in Agent(permissive).reconcile_file(agent_env.desired_file).programs}
    assert (report["whole-host"].state, report["whole-host"].reason) == (
        ProgramState.INVALID,
        "InvalidAttachSpec",
    )
    assert "allows cgroup_ingress only in cgroups /*, not in /" in report["whole-host"].message
    assert (report["execs"].state, report["execs"].reason) == (
        ProgramState.INVALID,
        "InvalidConfig",
    )
    assert "below the signed minimum -1" in report["execs"].message
    assert report["forks"].state == ProgramState.INVALID
    assert "only on targets sched/sched_process_exec" in report["forks"].message
    assert not any((agent_env.pin_root / name).exists() for name in report)


@pytest.mark.bpf
def test_hooks_and_versions_this_node_does_not_permit_are_refused(agent_env: AgentEnv) -> None:
    with veth_pair(subnet=91) as pair, entered(pair.left):
        agent_env.write_desired(
            program(
                "tc",
                "tc_counter",
                "1.0.0",
                {
                    "entryPoint": "tc_ingress",
                    "type": "tc",
                    "direction": "ingress",
                    "interfaces": [pair.left_if],
                },
            ),
            program(
                "syscalls",
                "syscount",
                "1.0.0",
                {"entryPoint": "count_sys_enter", "type": "raw_tracepoint"},
            ),
            program(
                "execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"}
            ),
            program(
                "lifetimes",
                "tcplife",
                "1.0.0",
                {"entryPoint": "handle_set_state", "type": "tracepoint"},
            ),
        )
        narrow = agent_env.settings().model_copy(
            update={
                "allowed_attach_kinds": [AttachKind.TC, AttachKind.TRACEPOINT],
                "allowed_interfaces": ["eth*"],
                "minimum_versions": {"tcplife": "1.1.0"},
            }
        )
        report = {p.name: p for p in Agent(narrow).reconcile_file(agent_env.desired_file).programs}
    assert report["tc"].reason == "NotPermittedOnThisNode"
    assert f"no hooks on interface {pair.left_if}" in report["tc"].message
    assert report["syscalls"].reason == "NotPermittedOnThisNode"
    assert "no raw_tracepoint hooks" in report["syscalls"].message
    assert (report["lifetimes"].state, report["lifetimes"].reason) == (
        ProgramState.INVALID,
        "BelowMinimumVersion",
    )
    assert report["execs"].state == ProgramState.ATTACHED, "what the node permits runs"
    assert sorted(p.name for p in agent_env.pin_root.iterdir()) == ["execs"]


@pytest.mark.bpf
def test_only_the_netpol_artifact_becomes_the_policy_datapath(agent_env: AgentEnv) -> None:
    """A policy part naming another artifact (however well signed) is refused before
    anything is downloaded, and what was enforced stays."""
    xdp = artifacts.sha256_file(agent_env.catalog.files("xdp_counter").object)
    with hostile_api() as api:
        settings = agent_env.settings().model_copy(
            update={"api_url": api.url, "allow_insecure_http": True}
        )
        settings.assignments_file.write_text(
            json.dumps(
                {
                    "node": settings.node_name,
                    "revision": 1,
                    "programs": [],
                    "policy": {
                        "revision": 1,
                        "artifact": {"name": "xdp_counter", "version": "1.0.0", "digest": xdp},
                        "policies": [],
                        "topology": {"namespaces": {}, "pods": {}},
                    },
                }
            )
        )
        files.write_atomically(
            settings.credential_file,
            json.dumps({"node": settings.node_name, "apiUrl": api.url, "token": "t"}),
        )
        credential = NodeCredential(
            settings.credential_file,
            node=settings.node_name,
            api_url=api.url,
            bootstrap_token=None,
            registration=lambda: Registration.model_validate({}),
        )
        agent = Agent(settings)
        cache = ArtifactCache(settings, credential, trust=lambda: agent.trust)
        cache.start()
        try:
            report = agent.reconcile_assignments(cache)
        finally:
            cache.close()
        assert api.requests == [], "nothing was downloaded for it"
    assert report is not None
    assert report.policy is not None
    assert report.policy.state == PolicyState.FAILED
    assert "names artifact xdp_counter, not netpol; refused" in report.policy.message
