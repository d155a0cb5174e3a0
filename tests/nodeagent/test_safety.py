"""What an apply must never do, whatever fails or changes under it: load bytes other than
the verified ones, leave half a change behind, unpin what runs, or touch others' pins."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpfleet_agent import libbpf, loading, mounts, pins, preparing
from bpfleet_agent.daemon import Agent
from bpfleet_core import artifacts, signing
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import ProgramAssignment
from tests.conftest import CATALOG, SignedCatalog, sign_object
from tests.nodeagent.conftest import AgentEnv, program
from tests.nodeagent.netns import entered, veth_pair

BPF_F_RDONLY_PROG = 1 << 7  # programs may only read the map


def xdp_entry(*interfaces: str, name: str = "xdp") -> dict[str, Any]:
    return program(
        name,
        "xdp_counter",
        "1.0.0",
        {"entryPoint": "xdp_count", "type": "xdp", "interfaces": list(interfaces)},
    )


def prepare(
    env: AgentEnv, report: FeatureReport, entry: dict[str, Any], dirs: list[Path] | None = None
) -> loading.Desired:
    prepared = preparing.prepare(
        ProgramAssignment.model_validate(entry),
        artifact_dirs=dirs or env.artifact_dirs,
        trust=signing.TrustStore.from_paths([env.catalog.trust]),
        report=report,
    )
    assert isinstance(prepared, loading.Desired), prepared
    return prepared


def kernel_of(env: AgentEnv) -> loading.Kernel:
    return loading.Kernel(env.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())


def observed(env: AgentEnv, name: str) -> Any:
    return loading.observe(kernel_of(env)).get(name)


def copy_artifact(catalog: SignedCatalog, name: str, directory: Path, as_name: str = "") -> Path:
    source = catalog.files(name)
    target = artifacts.ArtifactFiles.in_directory(directory, as_name or name)
    directory.mkdir(parents=True, exist_ok=True)
    for part in ("object", "manifest", "signature"):
        shutil.copyfile(getattr(source, part), getattr(target, part))
    return directory


def program_name(program_id: int) -> str:
    fd = libbpf.program_fd_by_id(program_id)
    try:
        return libbpf.program_info(fd).name
    finally:
        os.close(fd)


def map_id(path: Path) -> int:
    fd = libbpf.get_pinned(path)
    try:
        return libbpf.map_info(fd).id
    finally:
        os.close(fd)


def xdp_ids(interface: str) -> list[int]:
    return libbpf.query_xdp(socket.if_nametoindex(interface))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def netns() -> Iterator[Any]:
    """A veth pair whose left end this thread works in."""
    with veth_pair(subnet=90) as pair, entered(pair.left):
        yield pair


# ---------------------------------------------------------------- verified bytes only


@pytest.mark.bpf
def test_a_swap_after_verification_never_reaches_the_kernel(
    agent_env: AgentEnv, feature_report: FeatureReport, tmp_path: Path, netns: Any
) -> None:
    directory = copy_artifact(agent_env.catalog, "xdp_counter", tmp_path / "artifacts")
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if), [directory])
    # Between verification and load, another valid (signed, but other) object arrives.
    shutil.copyfile(
        agent_env.catalog.files("tc_counter").object,
        artifacts.ArtifactFiles.in_directory(directory, "xdp_counter").object,
    )
    ids = loading.apply(kernel_of(agent_env), desired, None)
    assert set(ids) == {"xdp_count"}
    assert program_name(ids["xdp_count"]) == "xdp_count"
    assert xdp_ids(netns.left_if) == [ids["xdp_count"]]


@pytest.mark.bpf
def test_an_unreadable_object_is_a_rejection(
    agent_env: AgentEnv, feature_report: FeatureReport, tmp_path: Path
) -> None:
    directory = copy_artifact(agent_env.catalog, "xdp_counter", tmp_path / "artifacts")
    files = artifacts.ArtifactFiles.in_directory(directory, "xdp_counter")
    files.object.unlink()
    files.object.mkdir()
    rejected = preparing.prepare(
        ProgramAssignment.model_validate(xdp_entry("lo")),
        artifact_dirs=[directory],
        trust=signing.TrustStore.from_paths([agent_env.catalog.trust]),
        report=feature_report,
    )
    assert isinstance(rejected, preparing.Rejection)
    assert (rejected.state, rejected.reason) == ("LoadFailed", "ArtifactUnreadable")


def test_artifacts_reached_through_symlinks_out_of_the_directory_are_not_found(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    outside = copy_artifact(signed_catalog, "xdp_counter", tmp_path / "outside")
    configured = tmp_path / "configured"
    (configured / "xdp_counter").mkdir(parents=True)
    (configured / "xdp_counter" / "1.0.0").symlink_to(outside)
    ref = ProgramAssignment.model_validate(xdp_entry("lo")).spec.artifact
    assert preparing.locate(ref, [configured]) is None
    assert preparing.locate(ref, [outside]) is not None


# ---------------------------------------------------------------- all or nothing


@pytest.mark.bpf
def test_any_error_while_linking_undoes_the_links_made(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any, monkeypatch: Any
) -> None:
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if, "lo"))
    real_attach, calls = loading._attach, []

    def attach_then_break(*args: Any) -> int:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("something nobody expected")
        return real_attach(*args)

    monkeypatch.setattr(loading, "_attach", attach_then_break)
    with pytest.raises(loading.NotAttached, match="something nobody expected"):
        loading.apply(kernel_of(agent_env), desired, None)
    assert xdp_ids(netns.left_if) == []  # the first link was undone
    assert not (agent_env.pin_root / "xdp").exists()


@pytest.mark.bpf
def test_readers_report_what_they_can_and_never_raise(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any
) -> None:
    kernel = kernel_of(agent_env)
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if))
    loading.apply(kernel, desired, None)
    version = pins.for_program(agent_env.pin_root, "xdp").version(desired.tag)
    # Entries that cannot be opened as pinned objects.
    (version / pins.PROGS / "not_a_pin").mkdir()
    (version / pins.MAPS / "not_a_pin").mkdir()
    assert set(loading.program_stats(kernel, "xdp", desired.tag)) == {"xdp_count"}
    assert "proto_stats" in {m.name for m in loading.map_summaries(kernel, "xdp", desired.tag)}
    assert loading.program_stats(kernel, "nothing", "0" * 16) == {}
    assert loading.map_summaries(kernel, "nothing", "0" * 16) == []


# ---------------------------------------------------------------- never unpin what runs


@pytest.mark.bpf
def test_a_failed_apply_keeps_live_links_whose_version_pins_are_gone(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any
) -> None:
    kernel = kernel_of(agent_env)
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if))
    running = loading.apply(kernel, desired, None)["xdp_count"]
    shutil.rmtree(pins.for_program(agent_env.pin_root, "xdp").version(desired.tag))
    assert observed(agent_env, "xdp").versions == {}  # nothing pinned but the link

    broken = prepare(agent_env, feature_report, xdp_entry(netns.left_if, "nosuch2"))
    with pytest.raises(loading.NotAttached, match="nosuch2"):
        loading.apply(kernel, broken, observed(agent_env, "xdp"))
    link = observed(agent_env, "xdp").links["xdp@" + netns.left_if]
    assert link.alive
    assert link.program_id == running
    assert xdp_ids(netns.left_if) == [running]


@pytest.mark.bpf
def test_reloading_the_running_version_keeps_its_maps_and_restores_it_on_failure(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any
) -> None:
    kernel = kernel_of(agent_env)
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if))
    running = loading.apply(kernel, desired, None)["xdp_count"]
    program_pins = pins.for_program(agent_env.pin_root, "xdp")
    counters = map_id(program_pins.map(desired.tag, "proto_stats"))
    # The running version lost a program pin: it cannot be adopted, only reloaded.
    program_pins.program(desired.tag, "xdp_count").unlink()

    broken = prepare(agent_env, feature_report, xdp_entry(netns.left_if, "nosuch3"))
    assert broken.tag == desired.tag
    with pytest.raises(loading.NotAttached):
        loading.apply(kernel, broken, observed(agent_env, "xdp"))
    assert map_id(program_pins.map(desired.tag, "proto_stats")) == counters  # still pinned
    assert xdp_ids(netns.left_if) == [running]
    assert sorted(p.name for p in program_pins.root.iterdir()) == sorted(
        [pins.MARKER, pins.LINKS, desired.tag]
    )

    reloaded = loading.apply(kernel, desired, observed(agent_env, "xdp"))["xdp_count"]
    assert reloaded != running
    assert xdp_ids(netns.left_if) == [reloaded]
    assert map_id(program_pins.map(desired.tag, "proto_stats")) == counters  # handed over
    assert program_pins.program(desired.tag, "xdp_count").exists()
    assert not program_pins.staging(desired.tag).exists()


# ---------------------------------------------------------------- interrupted replacements


def _link_ids() -> set[int]:
    import json

    listed = subprocess.run(
        ["bpftool", "-j", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    return {int(link["id"]) for link in json.loads(listed or "[]")}


@pytest.mark.bpf
def test_an_interrupted_replacement_is_settled_before_planning(
    agent_env: AgentEnv, feature_report: FeatureReport
) -> None:
    kernel = kernel_of(agent_env)
    entry = program(
        "execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"}
    )
    desired = prepare(agent_env, feature_report, entry)
    loading.apply(kernel, desired, None)
    links = pins.for_program(agent_env.pin_root, "execs").links
    (primary,) = links.iterdir()
    successor = primary.with_name(primary.name + pins.NEXT_SUFFIX)

    # Stopped after the old link was detached: the successor takes its name.
    primary.rename(successor)
    seen = observed(agent_env, "execs")
    assert [p.name for p in links.iterdir()] == [primary.name]
    assert seen.links[primary.name].alive
    loading.apply(kernel, desired, seen)
    assert [p.name for p in links.iterdir()] == [primary.name]

    # Stopped before the old link was detached: the successor goes. (Another program:
    # the kernel attaches a program to a tracepoint only once.)
    program_fd = libbpf.load_trivial_program("tracepoint")
    try:
        loading._attach_pinned(kernel, desired.hooks[0], program_fd, successor)
    finally:
        os.close(program_fd)
    extra = observed(agent_env, "execs")  # settles
    assert [p.name for p in links.iterdir()] == [primary.name]
    assert list(extra.links) == [primary.name]
    ours = {link.link_id for link in extra.links.values()}
    assert len(ours & _link_ids()) == 1  # the successor's link is gone from the kernel


# ---------------------------------------------------------------- fds and maps


@pytest.mark.bpf
def test_failures_leak_no_file_descriptors(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any, monkeypatch: Any
) -> None:
    kernel = kernel_of(agent_env)
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if))
    loading.apply(kernel, desired, None)
    reconfigured = prepare(
        agent_env,
        feature_report,
        program(
            "xdp",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [netns.left_if]},
            count_non_ip=False,
        ),
    )

    def failing(*_: Any) -> Any:
        raise libbpf.LibbpfError(5, "reading info")

    seen = observed(agent_env, "xdp")
    before = open_fds()
    with monkeypatch.context() as patch:
        patch.setattr(libbpf, "map_info", failing)
        with pytest.raises(loading.NotLoaded):  # while handing the maps over
            loading.apply(kernel, reconfigured, seen)
    with monkeypatch.context() as patch:
        patch.setattr(libbpf, "program_info", failing)
        with pytest.raises(loading.NotLoaded):  # after loading and pinning
            loading.apply(kernel, reconfigured, seen)
        # after opening the pinned programs to adopt them
        assert (
            loading._open_pinned_version(pins.for_program(agent_env.pin_root, "xdp"), desired)
            is None
        )
    assert open_fds() == before
    assert observed(agent_env, "xdp").versions.keys() == {desired.tag}


@pytest.mark.bpf
def test_a_pinned_map_with_other_flags_is_not_handed_over(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any
) -> None:
    kernel = kernel_of(agent_env)
    desired = prepare(agent_env, feature_report, xdp_entry(netns.left_if))
    loading.apply(kernel, desired, None)
    program_pins = pins.for_program(agent_env.pin_root, "xdp")
    path = program_pins.map(desired.tag, "proto_stats")
    fd = libbpf.get_pinned(path)
    info = libbpf.map_info(fd)
    os.close(fd)
    # Same type and sizes, but read-only to programs: not the map the object declares
    # (handed over, the new version would not even pass the verifier).
    planted = libbpf.map_create(
        info.type,
        "proto_stats",
        info.key_size,
        info.value_size,
        info.max_entries,
        flags=BPF_F_RDONLY_PROG,
    )
    path.unlink()
    libbpf.pin(planted, path)
    planted_id = libbpf.map_info(planted).id
    os.close(planted)

    upgraded = prepare(
        agent_env,
        feature_report,
        program(
            "xdp",
            "xdp_counter",
            "1.0.0",
            {"entryPoint": "xdp_count", "type": "xdp", "interfaces": [netns.left_if]},
            count_non_ip=False,
        ),
    )
    loading.apply(kernel, upgraded, observed(agent_env, "xdp"))
    assert map_id(program_pins.map(upgraded.tag, "proto_stats")) != planted_id


STRING_CONSTANTS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");
SEC("xdp")
int xdp_greet(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&seen, &zero);
	if (count)
		(*count)++;
	bpf_trace_printk(GREETING, sizeof(GREETING)); /* a literal: .rodata.str1.1 */
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def string_constants(agent_env: AgentEnv, tmp_path: Path) -> Path:
    """``greeter`` 1.0.0 and 2.0.0: same maps, other string literals (same length)."""
    source = tmp_path / "greeter.bpf.c"
    source.write_text(STRING_CONSTANTS)
    for version, greeting in (("1.0.0", "rev1"), ("2.0.0", "rev2")):
        built = tmp_path / version / "greeter.bpf.o"
        built.parent.mkdir()
        flags = ["-g", "-O2", "-target", "bpf", f"-I{CATALOG}", f'-DGREETING="{greeting}"']
        subprocess.run(["clang", *flags, "-c", str(source), "-o", str(built)], check=True)
        directory = tmp_path / "artifacts" / "greeter" / version
        sign_object(built, directory, "greeter", version, agent_env.catalog.private_key)
    return tmp_path / "artifacts"


@pytest.mark.bpf
def test_libbpf_internal_maps_are_pinned_whole_and_never_handed_over(
    agent_env: AgentEnv, feature_report: FeatureReport, netns: Any, string_constants: Path
) -> None:
    kernel = kernel_of(agent_env)
    program_pins = pins.for_program(agent_env.pin_root, "greeter")

    def greeter(version: str) -> loading.Desired:
        entry = program(
            "greeter",
            "greeter",
            version,
            {"entryPoint": "xdp_greet", "type": "xdp", "interfaces": [netns.left_if]},
        )
        desired = prepare(agent_env, feature_report, entry, [string_constants])
        loading.apply(kernel, desired, observed(agent_env, "greeter"))
        return desired

    def strings(desired: loading.Desired) -> bytes:
        fd = libbpf.get_pinned(program_pins.map(desired.tag, ".rodata.str1.1"))
        try:
            return libbpf.map_lookup(fd, b"\0\0\0\0", libbpf.map_info(fd).value_size) or b""
        finally:
            os.close(fd)

    v1 = greeter("1.0.0")
    maps = program_pins.version(v1.tag) / pins.MAPS
    assert sorted(p.name for p in maps.iterdir()) == ["rodata_str1_1", "seen"]
    assert strings(v1) == b"rev1\0"
    state = map_id(program_pins.map(v1.tag, "seen"))
    v2 = greeter("2.0.0")
    assert strings(v2) == b"rev2\0"  # its own constants, not the running version's
    assert map_id(program_pins.map(v2.tag, "seen")) == state  # while state carries over


# ---------------------------------------------------------------- others' pins


@pytest.mark.bpf
def test_pins_of_other_tools_under_the_pin_root_are_never_touched(
    agent_env: AgentEnv, netns: Any
) -> None:
    foreign = agent_env.pin_root / "someone-else"
    foreign.mkdir(parents=True)
    map_fd = libbpf.map_create("array", "theirs", 4, 8, 1)
    libbpf.pin(map_fd, foreign / "state")
    os.close(map_fd)
    # Same name as a program of ours, but not ours.
    (agent_env.pin_root / "xdp").mkdir()
    map_fd = libbpf.get_pinned(foreign / "state")
    libbpf.pin(map_fd, agent_env.pin_root / "xdp" / "state")
    os.close(map_fd)

    agent = Agent(agent_env.settings())
    agent_env.write_desired(xdp_entry(netns.left_if))
    report = {p.name: p for p in agent.reconcile_file(agent_env.desired_file).programs}
    assert report["xdp"].state == "LoadFailed"
    assert "is not managed by bpfleet" in report["xdp"].message
    assert xdp_ids(netns.left_if) == []
    agent_env.write_desired()  # nothing wanted: nothing of theirs is removed either
    agent.reconcile_file(agent_env.desired_file)
    assert loading.observe(kernel_of(agent_env)) == {}
    assert (foreign / "state").exists()
    assert (agent_env.pin_root / "xdp" / "state").exists()


@pytest.mark.bpf
def test_a_bpffs_mount_point_is_refused_as_pin_root(agent_env: AgentEnv) -> None:
    with pytest.raises(mounts.MountError, match="is a bpffs mount point"):
        mounts.ensure_bpffs(Path("/sys/fs/bpf"))
    settings = agent_env.settings().model_copy(update={"pin_root": Path("/sys/fs/bpf")})
    with pytest.raises(mounts.MountError):
        Agent(settings)


@pytest.mark.bpf
def test_a_private_bpffs_at_an_empty_pin_root_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "pins"
    try:
        mounts.ensure_bpffs(root)
        assert any(m.target == root and m.fstype == "bpf" for m in mounts.mounts())
        mounts.ensure_bpffs(root)  # ours: accepted again, e.g. after a restart
    finally:
        subprocess.run(["umount", str(root)], check=False)
    (root / "something").mkdir()
    with pytest.raises(mounts.MountError, match="not an empty directory"):
        mounts.ensure_bpffs(root)
