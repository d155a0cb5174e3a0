"""Verify + check + load + attach one cached object, next to bpftool's bare load + attach.

Target (brief): bpfleet <= 1.5x bpftool. Both attach xdp_counter to a veth inside a
private network namespace, N times, tearing down in between. bpftool runs as a process
(its start-up is part of its figure); bpfleet's figure is what the agent pays in-process
per program, so the comparison leans slightly in bpftool's favour.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from _fleet import namespace_with_veth, signed_catalog

from bpfleet_agent import loading, mounts, preparing, probing
from bpfleet_core import signing
from bpfleet_core.protocol import ProgramAssignment

ROUNDS = 30


def bpfleet_round(
    kernel: loading.Kernel,
    assignment: ProgramAssignment,
    dirs: list[Path],
    trust: signing.TrustStore,
    report: object,
) -> tuple[float, float]:
    """(verify + check, load + attach + pin) in seconds."""
    started = time.perf_counter()
    desired = preparing.prepare(assignment, artifact_dirs=dirs, trust=trust, report=report)  # type: ignore[arg-type]
    prepared = time.perf_counter()
    assert isinstance(desired, loading.Desired), desired
    loading.apply(kernel, desired, None)
    applied = time.perf_counter()
    loading.remove(kernel, assignment.name)
    return prepared - started, applied - prepared


def bpftool_round(netns: str, object_path: Path, pin: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["bpftool", "prog", "load", str(object_path), str(pin), "type", "xdp"], check=True
    )
    subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            "bpftool",
            "net",
            "attach",
            "xdp",
            "pinned",
            str(pin),
            "dev",
            "bench0",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            "bpftool",
            "net",
            "detach",
            "xdp",
            "dev",
            "bench0",
        ],
        check=True,
    )
    pin.unlink()
    return elapsed


def main() -> None:
    with signed_catalog() as (artifact_dir, trust_dir), namespace_with_veth() as netns:
        pin_root = Path(f"/sys/fs/bpf/bpfleet-bench-{uuid.uuid4().hex[:6]}")
        mounts.ensure_bpffs(pin_root)
        kernel = loading.Kernel(pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
        report = probing.probe("bench", pin_root, kernel.tracefs, kernel.cgroup_root)
        trust = signing.TrustStore.from_paths([trust_dir])
        assignment = ProgramAssignment.model_validate(
            {
                "name": "bench",
                "spec": {
                    "artifact": {"name": "xdp_counter", "version": "1.0.0"},
                    "attach": [
                        {"entryPoint": "xdp_count", "type": "xdp", "interfaces": ["bench0"]}
                    ],
                },
            }
        )
        try:
            ours = [
                bpfleet_round(kernel, assignment, [artifact_dir], trust, report)
                for _ in range(ROUNDS)
            ]
            pin = Path(f"/sys/fs/bpf/bench-bpftool-{uuid.uuid4().hex[:6]}")
            theirs = [
                bpftool_round(netns, artifact_dir / "xdp_counter.bpf.o", pin) for _ in range(ROUNDS)
            ]
        finally:
            shutil.rmtree(pin_root, ignore_errors=True)
    verify_ms = statistics.median(v for v, _ in ours) * 1000
    apply_ms = statistics.median(a for _, a in ours) * 1000
    ours_ms, theirs_ms = (
        statistics.median(v + a for v, a in ours) * 1000,
        statistics.median(theirs) * 1000,
    )
    print(f"verify+check+load+attach (bpfleet, in-process): median {ours_ms:.2f} ms over {ROUNDS}")
    print(f"  of which verify signature + digest + compatibility: {verify_ms:.2f} ms")
    print(f"  of which open + load (verifier) + pin + link: {apply_ms:.2f} ms")
    print(
        f"load+attach (bpftool prog load + net attach):   median {theirs_ms:.2f} ms over {ROUNDS}"
    )
    print(f"ratio bpfleet/bpftool: {ours_ms / theirs_ms:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
