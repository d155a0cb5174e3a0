"""Manifests as they are written in Git, for the GitOps tests."""

from __future__ import annotations


def program_yaml(
    name: str = "execs",
    artifact: str = "execsnoop",
    entry_point: str = "handle_exec",
    attach_type: str = "tracepoint",
) -> str:
    """A ``BpfProgram``; ``attach`` is on line 8 and its entry on line 9."""
    return f"""\
apiVersion: bpfleet.io/v1alpha1
kind: BpfProgram
metadata:
  name: {name}
spec:
  artifact: {{name: {artifact}, version: "1.0.0"}}
  attach:
    - {{entryPoint: {entry_point}, type: {attach_type}}}
"""
