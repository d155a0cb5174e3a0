"""From an assignment to a program ready for the kernel, or a report of why not.

Order matters and is the security boundary: the signature is verified (and that it
vouches for the artifact asked for, by name and version, no older than this node's
floor), then the object's requirements are checked against this node, then the spec
against the object and the constraints its signer set, then the hooks against what this
node permits; only a program that passes them all ever reaches ``loading``, carrying the
object bytes that were verified.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bpfleet_agent import loading, pins
from bpfleet_agent.permits import UNRESTRICTED, NodePermits
from bpfleet_agent.reconciling import SpecError, expand
from bpfleet_core import artifacts, features, fitting, signing
from bpfleet_core.protocol import ProgramAssignment, ProgramState
from bpfleet_core.resources import ArtifactRef

_NOT_TRUST_FAILURES = {artifacts.RejectionReason.NOT_FOUND, artifacts.RejectionReason.UNREADABLE}


@dataclass(frozen=True)
class Rejection:
    """Why a program (or the policy datapath) is not loaded as asked, as its state.

    ``digest``: the object the rejection is about, when known (the assignment pins it,
    or its bytes were there to hash), so a running copy of that very object can be
    recognised."""

    state: ProgramState
    reason: str
    message: str
    digest: str | None = None


def rejected(error: artifacts.ArtifactRejected, digest: str | None = None) -> Rejection:
    """A failed verification as a program state. Files that are missing or unreadable
    say nothing about trust; everything else (including a valid signature for another
    artifact's name) is a trust failure."""
    state = (
        ProgramState.LOAD_FAILED
        if error.reason in _NOT_TRUST_FAILURES
        else ProgramState.SIGNATURE_REJECTED
    )
    return Rejection(state, error.reason.value, error.message, digest)


def _declared_version(files: artifacts.ArtifactFiles) -> str | None:
    """The version a manifest claims, read before verification only to pick a file;
    the bytes are not verified yet, so anything they do (nest too deep, say) means
    only that they claim nothing."""
    try:
        version = json.loads(files.manifest.read_bytes()).get("version")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return version if isinstance(version, str) else None


def _object_digest(files: artifacts.ArtifactFiles) -> str | None:
    try:
        return artifacts.sha256_file(files.object)
    except OSError:
        return None


def _inside(files: artifacts.ArtifactFiles, directory: Path) -> bool:
    """Whether the files, symlinks followed, stay within the configured directory."""
    root = directory.resolve()
    return all(
        path.resolve().is_relative_to(root)
        for path in (files.object, files.manifest, files.signature)
    )


def locate(ref: ArtifactRef, directories: Sequence[Path]) -> artifacts.ArtifactFiles | None:
    """Look in each directory, flat (``<dir>/<name>.*``) and by version
    (``<dir>/<name>/<version>/<name>.*``). The first copy claiming the wanted version
    wins, else the first copy found (whose verification then says what is wrong).
    Copies that lead out of their directory (through symlinks) are not considered."""
    found: list[artifacts.ArtifactFiles] = []
    for directory in directories:
        for candidate in (directory, directory / ref.name / ref.version):
            files = artifacts.ArtifactFiles.in_directory(candidate, ref.name)
            try:
                present = files.manifest.is_file() or files.object.is_file()
                if present and _inside(files, directory):
                    found.append(files)
            except (OSError, RuntimeError):  # unreadable directory, symlink loop
                continue
    matching = (files for files in found if _declared_version(files) == ref.version)
    return next(matching, found[0] if found else None)


def prepare(
    assignment: ProgramAssignment,
    *,
    artifact_dirs: Sequence[Path],
    trust: signing.TrustStore,
    report: features.FeatureReport,
    permits: NodePermits | None = None,
) -> loading.Desired | Rejection:
    """``permits``: what this node allows (None: anything the signature does)."""
    permits = permits or UNRESTRICTED
    spec = assignment.spec
    ref = spec.artifact
    files = locate(ref, artifact_dirs)
    if files is None:
        return Rejection(
            ProgramState.LOAD_FAILED,
            artifacts.RejectionReason.NOT_FOUND.value,
            f"artifact {ref.name}@{ref.version} is in none of: "
            + ", ".join(str(d) for d in artifact_dirs),
        )
    try:
        verified = artifacts.verify(
            files, trust, expected_digest=ref.digest, expected_name=ref.name
        )
    except artifacts.ArtifactRejected as error:
        return rejected(error, ref.digest or _object_digest(files))
    manifest = verified.manifest
    if manifest.version != ref.version:
        return Rejection(
            ProgramState.LOAD_FAILED,
            artifacts.RejectionReason.NOT_FOUND.value,
            f"found {manifest.name}@{manifest.version}, the assignment asks for {ref.version}",
        )
    too_old = permits.version_problem(manifest.name, manifest.version)
    if too_old is not None:
        return Rejection(ProgramState.INVALID, "BelowMinimumVersion", too_old, ref.digest)
    missing = features.check(manifest.requirements, report)
    if missing:
        return Rejection(
            ProgramState.INCOMPATIBLE, "MissingKernelFeatures", features.summarize(missing)
        )
    try:
        hooks = expand(spec.attach, manifest)
    except SpecError as error:
        return Rejection(ProgramState.INVALID, "InvalidAttachSpec", str(error))
    config_problems = fitting.config_problems(manifest, spec.config)
    if config_problems:
        return Rejection(ProgramState.INVALID, "InvalidConfig", "; ".join(config_problems))
    not_permitted = permits.hook_problems(hooks)
    if not_permitted:
        return Rejection(ProgramState.INVALID, "NotPermittedOnThisNode", "; ".join(not_permitted))
    return loading.Desired(
        name=assignment.name,
        object_bytes=verified.object_bytes,
        manifest=manifest,
        config=dict(spec.config),
        hooks=tuple(hooks),
        tag=pins.load_tag(manifest.object.sha256, dict(spec.config)),
    )
