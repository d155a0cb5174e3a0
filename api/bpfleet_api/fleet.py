"""Fleet state operations over the database: the API's single-writer logic.

Routes and tasks are thin shells around these functions. Each function changes the
session but never commits: the caller commits once, then wakes the nodes whose
assignments changed (see ``notify``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from bpfleet_api import policies, rollouts, security
from bpfleet_api.changes import (
    Changes,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    bump_revision,
    get_node,
)
from bpfleet_api.models import (
    ACTIVE_PHASES,
    Artifact,
    Assignment,
    Event,
    Node,
    NodeFeatures,
    NodePolicyAssignment,
    NodeProgramStatus,
    NodeTombstone,
    Program,
    ProgramRevision,
    Role,
    Rollout,
    RolloutPhase,
    Token,
    aware,
    utcnow,
)
from bpfleet_core import artifacts, features, fitting, manifests, signing
from bpfleet_core.protocol import (
    POLICY_ARTIFACT,
    POLICY_PROGRAM,
    Assignments,
    NodeReport,
    ProgramAssignment,
    ProgramState,
    Registration,
    RegistrationResult,
)
from bpfleet_core.resources import ArtifactRef, BpfProgramSpec, LabelSelector

NodeReadiness = Literal["Ready", "NotReady", "Unknown"]


# ---------------------------------------------------------------------------- nodes


def readiness(
    node: Node, now: datetime, ready_seconds: float, unknown_seconds: float
) -> NodeReadiness:
    return readiness_at(node.last_heartbeat, now, ready_seconds, unknown_seconds)


def readiness_at(
    heartbeat: datetime | None, now: datetime, ready_seconds: float, unknown_seconds: float
) -> NodeReadiness:
    """Ready while heartbeats are fresh, NotReady when they are late, Unknown after."""
    if heartbeat is None:
        return "Unknown"
    age = (now - aware(heartbeat)).total_seconds()
    if age <= ready_seconds:
        return "Ready"
    return "NotReady" if age <= unknown_seconds else "Unknown"


def _relabel(node: Node) -> None:
    """What selectors see: the agent's labels, with the admin's (Kubernetes') winning."""
    node.labels = {**node.agent_labels, **node.admin_labels}


def _may_register(session: Session, caller: Token, registration: Registration) -> Node | None:
    """The node row a registration may take, or None for a new name; refuses callers who
    cannot prove they are the node, and names an admin deleted."""
    name = registration.node
    if caller.role == Role.AGENT and caller.node != name:
        raise Forbidden(f"this credential belongs to node {caller.node}, not {name}")
    tombstone = session.get(NodeTombstone, name)
    node = session.get(Node, name)
    if caller.role == Role.ADMIN:
        if tombstone is not None:
            session.delete(tombstone)  # an admin registering it is the admin's say-so
        return node
    if tombstone is not None:
        raise Forbidden(
            f"node {name} was deleted by an admin; it registers again once an admin allows "
            f"it (DELETE /v1/node-tombstones/{name})"
        )
    if node is None or caller.role == Role.AGENT:
        return node
    key = registration.node_key.get_secret_value() if registration.node_key else None
    if not security.proves_node(node, key):
        said = "a node key that is not its" if key else "no node key"
        raise Conflict(
            f"node {name} is registered already, and this registration carries {said}: "
            "only the node itself (its node key or token) or an admin may register it again"
        )
    return node


def register_node(
    session: Session, caller: Token, registration: Registration
) -> tuple[RegistrationResult, Changes]:
    """Register a node, or register it again: a new token (the old ones revoked), the
    labels its agent declares (under the admin's), its features. A new name needs only
    the bootstrap token; a registered one needs proof it is that node (see
    ``_may_register``), so a bootstrap token alone never takes a node over."""
    name = registration.node
    # Labels are seen by policies' node selectors: lock before any node row changes.
    if policies.hosts_endpoints(session, name):
        policies.lock(session)
    node = _may_register(session, caller, registration) or Node(name=name)
    presented = registration.node_key.get_secret_value() if registration.node_key else None
    if presented and (node.key_digest is None or security.proves_node(node, presented)):
        node_key = presented  # the node keeps the key it holds
    else:
        node_key = security.new_secret()
    node.key_digest = security.digest(node_key)
    node.agent_labels = dict(registration.labels)
    _relabel(node)
    node.kernel_release = registration.features.kernel_release
    node.last_heartbeat = utcnow()
    session.add(node)
    store_features(session, name, registration.features)
    security.revoke_node_tokens(session, name)
    token, _ = security.mint(session, f"node:{name}", Role.AGENT, node=name)
    session.flush()
    changes = sync_node(session, node)
    if policies.hosts_endpoints(session, name):
        changes.merge(policies.sync(session))
    return RegistrationResult(node=name, token=token, node_key=node_key), changes


def set_admin_labels(session: Session, name: str, labels: dict[str, str]) -> tuple[Node, Changes]:
    """Replace the labels an admin sets (the operator: the Kubernetes Node's); the
    agent's own stay, under them."""
    policies.lock(session)  # policies' node selectors see labels too
    node = get_node(session, name)
    node.admin_labels = dict(labels)
    _relabel(node)
    session.add(node)
    session.flush()
    return node, sync_node(session, node).merge(policies.sync(session))


def update_features(session: Session, name: str, report: features.FeatureReport) -> None:
    """A node's kernel changed: keep its new feature report for preflights."""
    node = get_node(session, name)
    node.kernel_release = report.kernel_release
    session.add(node)
    store_features(session, name, report)


def delete_node(session: Session, name: str) -> Changes:
    """Forget a node and revoke its credentials (its kernel keeps what it runs), and
    leave a tombstone: the name registers again only once an admin allows it. Its
    endpoints leave the fleet topology, which other nodes' policies may resolve."""
    policies.lock(session)
    node = get_node(session, name)
    for table in (Assignment, NodeProgramStatus, NodeFeatures):
        for row in session.exec(select(table).where(table.node == name)).all():
            session.delete(row)
    policies.forget_node(session, name)
    security.revoke_node_tokens(session, name)
    session.delete(node)
    session.merge(NodeTombstone(name=name))
    session.flush()
    return policies.sync(session)


def tombstones(session: Session) -> list[NodeTombstone]:
    return list(session.exec(select(NodeTombstone).order_by(col(NodeTombstone.name))).all())


def lift_tombstone(session: Session, name: str) -> None:
    """Let a deleted node's name register again."""
    tombstone = session.get(NodeTombstone, name)
    if tombstone is None:
        raise NotFound(f"node {name} has no tombstone")
    session.delete(tombstone)


def store_features(session: Session, node: str, report: features.FeatureReport) -> None:
    row = session.get(NodeFeatures, node) or NodeFeatures(node=node, report={})
    row.report = report.model_dump(mode="json")
    session.add(row)


def features_of(session: Session, node: str) -> features.FeatureReport | None:
    row = session.get(NodeFeatures, node)
    return features.FeatureReport.model_validate(row.report) if row is not None else None


def selected_nodes(session: Session, selector: LabelSelector) -> list[str]:
    rows = session.exec(select(Node.name, Node.labels).order_by(col(Node.name))).all()
    return [name for name, labels in rows if selector.matches(dict(labels))]


def sync_node(session: Session, node: Node) -> Changes:
    """Give a node the programs its labels select (at their settled generation), and take
    away those they no longer select. Running rollouts pick nodes up themselves."""
    changes = Changes()
    for program in session.exec(select(Program).where(col(Program.killed).is_(False))).all():
        spec = BpfProgramSpec.model_validate(program.spec)
        assigned = session.get(Assignment, (node.name, program.name))
        if not spec.node_selector.matches(node.labels):
            if assigned is not None:
                changes.merge(unassign(session, node.name, program.name))
            continue
        if assigned is None and _settled(session, program.name, program.generation):
            changes.merge(
                assign(session, node.name, program.name, program.generation, program.spec)
            )
    return changes


def _settled(session: Session, program: str, generation: int) -> bool:
    latest = latest_rollout(session, program)
    return latest is None or (
        latest.to_generation == generation and latest.phase == RolloutPhase.SUCCEEDED
    )


# ------------------------------------------------------------------------ assignments


def assign(
    session: Session, node: str, program: str, generation: int, spec: dict[str, Any]
) -> Changes:
    current = session.get(Assignment, (node, program))
    if current is not None and current.generation == generation and current.spec == spec:
        return Changes()  # already so: idempotent
    revision = bump_revision(session, node)
    current = current or Assignment(
        node=node, program=program, generation=generation, spec=spec, revision=revision
    )
    current.generation, current.spec, current.revision = generation, spec, revision
    session.add(current)
    return Changes({node})


def unassign(session: Session, node: str, program: str) -> Changes:
    current = session.get(Assignment, (node, program))
    if current is None:
        return Changes()
    bump_revision(session, node)
    session.delete(current)
    return Changes({node})


def assignments_after(session: Session, name: str, after: int) -> Assignments | None:
    """A node's whole desired state once its revision passed ``after``, else None. A
    revision below ``after`` means the database went back in time (a restore): the agent
    gets its assignments at once, rather than waiting for the counter to catch up."""
    node = get_node(session, name)
    if node.desired_revision == after:
        return None
    found = assignments_of(session, node)
    return found.model_copy(update={"policy": policies.part_of(session, name)})


def assignments_of(session: Session, node: Node) -> Assignments:
    rows = session.exec(
        select(Assignment).where(Assignment.node == node.name).order_by(col(Assignment.program))
    ).all()
    return Assignments(
        node=node.name,
        revision=node.desired_revision,
        programs=[
            ProgramAssignment(name=row.program, spec=BpfProgramSpec.model_validate(row.spec))
            for row in rows
        ],
    )


# -------------------------------------------------------------------------- artifacts


def store_artifact(
    session: Session,
    object_bytes: bytes,
    manifest_bytes: bytes,
    signature: bytes,
    trust: signing.TrustStore,
) -> Artifact:
    """Verify as an agent would, then keep the files content-addressed by object digest."""
    digest = artifacts.sha256_bytes(object_bytes)
    try:
        manifest, signer = artifacts.verify_bytes(
            object_digest=digest, manifest_bytes=manifest_bytes, signature=signature, trust=trust
        )
    except artifacts.ArtifactRejected as rejected:
        raise Invalid(
            f"artifact rejected ({rejected.reason.value}): {rejected.message}"
        ) from rejected
    existing = session.get(Artifact, digest)
    if existing is not None:
        return existing
    artifact = Artifact(
        digest=digest,
        name=manifest.name,
        version=manifest.version,
        manifest=manifest_bytes,
        signature=signature,
        object=object_bytes,
        signer=signer.key_id,
    )
    session.add(artifact)
    return artifact


def find_artifact(session: Session, ref: ArtifactRef) -> Artifact:
    query = select(Artifact).where(Artifact.name == ref.name, Artifact.version == ref.version)
    if ref.digest:
        query = query.where(Artifact.digest == ref.digest)
    found = session.exec(query.order_by(col(Artifact.uploaded_at).desc())).first()
    if found is None:
        pinned = f" with digest {ref.digest[:12]}…" if ref.digest else ""
        raise NotFound(f"artifact {ref.name}@{ref.version}{pinned} has not been uploaded")
    return found


def manifest_of(artifact: Artifact) -> manifests.Manifest:
    return manifests.parse(artifact.manifest)


def list_artifacts(session: Session) -> list[Artifact]:
    """Every artifact without its object and signature, which only downloads read."""
    return list(
        session.exec(
            select(Artifact)
            .options(defer(Artifact.object), defer(Artifact.signature))  # type: ignore[arg-type]
            .order_by(col(Artifact.name), col(Artifact.version))
        ).all()
    )


def artifact_by_digest(session: Session, digest: str) -> Artifact:
    """An artifact's metadata and manifest, without its object and signature."""
    found = session.exec(
        select(Artifact)
        .options(defer(Artifact.object), defer(Artifact.signature))  # type: ignore[arg-type]
        .where(Artifact.digest == digest)
    ).first()
    if found is None:
        raise NotFound(f"no artifact with digest {digest}")
    return found


def artifact_file(
    session: Session, digest: str, part: Literal["object", "manifest", "signature"]
) -> bytes:
    """One file of an artifact, the only column read."""
    column = {"object": Artifact.object, "manifest": Artifact.manifest}.get(
        part, Artifact.signature
    )
    content = session.exec(select(column).where(Artifact.digest == digest)).first()
    if content is None:
        raise NotFound(f"no artifact with digest {digest}")
    return content


def collect_garbage(session: Session) -> list[str]:
    """Delete artifacts no program revision refers to, keeping the policy datapath: the
    newest ``netpol`` and any a node's policy part names; return their digests."""
    referenced = {
        spec["artifact"].get("digest")
        for spec in [
            *session.exec(select(ProgramRevision.spec)).all(),
            *session.exec(select(Program.spec)).all(),
        ]
    }
    referenced |= {
        artifact.get("digest")
        for artifact in session.exec(select(NodePolicyAssignment.artifact)).all()
        if artifact is not None
    }
    newest_netpol = session.exec(
        select(Artifact.digest)
        .where(Artifact.name == POLICY_ARTIFACT)
        .order_by(col(Artifact.uploaded_at).desc())
    ).first()
    referenced.add(newest_netpol)
    removed = [
        digest
        for digest in session.exec(select(Artifact.digest).order_by(col(Artifact.digest))).all()
        if digest not in referenced
    ]
    if removed:
        session.execute(delete(Artifact).where(col(Artifact.digest).in_(removed)))
    return removed


# --------------------------------------------------------------------------- programs


def resolve_spec(
    session: Session, spec: BpfProgramSpec
) -> tuple[BpfProgramSpec, manifests.Manifest]:
    """Pin the artifact digest and check the spec against the artifact's manifest."""
    artifact = find_artifact(session, spec.artifact)
    manifest = manifest_of(artifact)
    problems = fitting.attach_problems(spec.attach, manifest) + fitting.config_problems(
        manifest, spec.config
    )
    if problems:
        raise Invalid(f"the spec does not fit {manifest.name}@{manifest.version}", problems)
    pinned = spec.model_copy(
        update={"artifact": spec.artifact.model_copy(update={"digest": artifact.digest})}
    )
    return pinned, manifest


def _event(
    session: Session, program: str, reason: str, message: str, node: str | None = None
) -> None:
    session.add(Event(program=program, node=node, reason=reason, message=message))


def latest_rollout(session: Session, program: str) -> Rollout | None:
    return session.exec(
        select(Rollout).where(Rollout.program == program).order_by(col(Rollout.id).desc())
    ).first()


def _supersede_active(session: Session, program: str) -> None:
    for rollout in session.exec(
        select(Rollout).where(Rollout.program == program, col(Rollout.phase).in_(ACTIVE_PHASES))
    ).all():
        rollout.phase = RolloutPhase.SUPERSEDED
        rollout.message = "superseded by a newer change"
        rollout.updated_at = utcnow()
        session.add(rollout)


def put_program(
    session: Session, name: str, spec: BpfProgramSpec
) -> tuple[Program, Rollout | None]:
    """Store a program's desired spec; a change starts a rollout. Same spec: no-op."""
    if name == POLICY_PROGRAM:
        raise Invalid(f"the program name {name} is reserved for the network-policy datapath")
    pinned, _ = resolve_spec(session, spec)
    stored = pinned.model_dump(mode="json", by_alias=True)
    program = session.get(Program, name)
    if program is not None and program.spec == stored and not program.killed:
        return program, latest_rollout(session, name)
    previous = program.generation if program is not None and not program.killed else None
    if program is None:
        program = Program(name=name, generation=1, spec=stored)
    else:
        program.generation += 1
        program.spec, program.killed, program.updated_at = stored, False, utcnow()
    session.add(program)
    session.add(ProgramRevision(program=name, generation=program.generation, spec=stored))
    _supersede_active(session, name)
    rollout = Rollout(
        program=name,
        from_generation=previous,
        to_generation=program.generation,
        next_check_at=utcnow(),
    )
    session.add(rollout)
    _event(
        session,
        name,
        "RolloutStarted",
        f"generation {program.generation}: {pinned.artifact.name}@{pinned.artifact.version}",
    )
    session.flush()
    return program, rollout


def get_program(session: Session, name: str) -> Program:
    program = session.get(Program, name)
    if program is None:
        raise NotFound(f"program {name} does not exist")
    return program


def _unassign_everywhere(session: Session, name: str) -> Changes:
    changes = Changes()
    for row in session.exec(select(Assignment).where(Assignment.program == name)).all():
        changes.merge(unassign(session, row.node, name))
    return changes


def delete_program(session: Session, name: str) -> Changes:
    get_program(session, name)
    _supersede_active(session, name)
    changes = _unassign_everywhere(session, name)
    session.delete(get_program(session, name))
    _event(session, name, "Deleted", f"detaching from {len(changes.nodes)} node(s)")
    return changes


def kill_program(session: Session, name: str) -> Changes:
    """The kill switch: detach everywhere at once, no rollout, until the spec is put again."""
    program = get_program(session, name)
    _supersede_active(session, name)
    program.killed, program.updated_at = True, utcnow()
    session.add(program)
    changes = _unassign_everywhere(session, name)
    _event(session, name, "Killed", f"kill switch: detaching from {len(changes.nodes)} node(s)")
    return changes


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Summary:
    desired: int
    attached: int
    failed: int
    incompatible: int
    pending: int


def record_report(session: Session, node: Node, report: NodeReport, events_kept: int) -> None:
    """Store what a node says it runs; attribute each state to the generation it is about.

    A node's word is bounded: states are kept only for programs it was assigned (or
    still has a state for, while one is being removed), its revision never passes the
    one it was sent, and each program keeps its ``events_kept`` newest events."""
    node.applied_revision = max(node.applied_revision, min(report.revision, node.desired_revision))
    node.last_heartbeat = utcnow()
    session.add(node)
    assigned = {
        row.program: row
        for row in session.exec(select(Assignment).where(Assignment.node == node.name)).all()
    }
    eventful = set()
    for program_report in report.programs:
        assignment = assigned.get(program_report.name)
        status = session.get(NodeProgramStatus, (node.name, program_report.name))
        if assignment is None and program_report.state == ProgramState.DETACHED:
            if status is not None:
                session.delete(status)
                _event(
                    session,
                    program_report.name,
                    ProgramState.DETACHED.value,
                    program_report.message or "detached from the node",
                    node.name,
                )
            continue
        if assignment is None and status is None:
            continue  # never assigned here: nothing to keep
        status = status or NodeProgramStatus(
            node=node.name, program=program_report.name, state=program_report.state
        )
        if assignment is not None and report.revision >= assignment.revision:
            status.generation = assignment.generation
        if status.state != program_report.state.value or status.reason != program_report.reason:
            _event(
                session,
                program_report.name,
                program_report.state.value,
                program_report.message or program_report.reason,
                node.name,
            )
            eventful.add(program_report.name)
        status.state, status.reason, status.message = (
            program_report.state.value,
            program_report.reason,
            program_report.message,
        )
        status.report = program_report.model_dump(mode="json", by_alias=True)
        status.updated_at = utcnow()
        session.add(status)
    session.flush()
    for program in sorted(eventful):
        prune_events(session, program, events_kept)


def prune_events(session: Session, program: str, keep: int) -> None:
    """Keep a program's ``keep`` newest events."""
    cutoff = session.exec(
        select(Event.id)
        .where(Event.program == program)
        .order_by(col(Event.id).desc())
        .offset(keep)
        .limit(1)
    ).first()
    if cutoff is not None:
        session.execute(delete(Event).where(col(Event.program) == program, col(Event.id) <= cutoff))


def summarize(session: Session, program: Program) -> Summary:
    assigned = session.exec(select(Assignment).where(Assignment.program == program.name)).all()
    statuses = {
        row.node: row
        for row in session.exec(
            select(NodeProgramStatus).where(NodeProgramStatus.program == program.name)
        ).all()
    }
    counts = {"attached": 0, "failed": 0, "incompatible": 0, "pending": 0}
    for row in assigned:
        status = statuses.get(row.node)
        state = (
            ProgramState(status.state)
            if status is not None and status.generation == row.generation
            else None
        )
        if state == ProgramState.ATTACHED:
            counts["attached"] += 1
        elif state == ProgramState.INCOMPATIBLE:
            counts["incompatible"] += 1
        elif state in rollouts.FAILED_STATES:
            counts["failed"] += 1
        else:
            counts["pending"] += 1
    return Summary(desired=len(assigned), **counts)


# --------------------------------------------------------------------------- rollouts


def advance_rollout(
    session: Session, rollout_id: int, now: datetime, tick_seconds: float
) -> tuple[float | None, Changes]:
    """Take the next step of one rollout; return when to look again and what changed."""
    rollout = session.exec(
        select(Rollout).where(Rollout.id == rollout_id).with_for_update()
    ).first()
    if rollout is None or rollout.phase not in ACTIVE_PHASES:
        return None, Changes()
    revision = session.get(ProgramRevision, (rollout.program, rollout.to_generation))
    if revision is None:
        raise NotFound(f"program {rollout.program} generation {rollout.to_generation} is gone")
    spec = BpfProgramSpec.model_validate(revision.spec)
    selected = selected_nodes(session, spec.node_selector)
    statuses = session.exec(
        select(NodeProgramStatus).where(NodeProgramStatus.program == rollout.program)
    ).all()
    outcomes = {
        status.node: ProgramState(status.state)
        if status.generation == rollout.to_generation
        else None
        for status in statuses
    }
    progress = rollouts.Progress(
        rollout.phase,
        rollout.step,
        tuple(rollout.updated_nodes),
        aware(rollout.step_settled_at) if rollout.step_settled_at else None,
    )
    decision = rollouts.decide(progress, spec.rollout, selected, outcomes, now, tick_seconds)
    changes = Changes()
    for node in decision.assign_new:
        changes.merge(assign(session, node, rollout.program, rollout.to_generation, revision.spec))
    if decision.revert:
        changes.merge(_revert(session, rollout, decision.revert))
    if decision.progress.phase == RolloutPhase.SUCCEEDED:
        for row in session.exec(
            select(Assignment).where(Assignment.program == rollout.program)
        ).all():
            if row.node not in selected:
                changes.merge(unassign(session, row.node, rollout.program))
    if decision.progress.phase != rollout.phase:
        _event(
            session, rollout.program, f"Rollout{decision.progress.phase.value}", decision.message
        )
    rollout.phase = decision.progress.phase
    rollout.step = decision.progress.step
    rollout.updated_nodes = list(decision.progress.updated_nodes)
    rollout.step_settled_at = decision.progress.step_settled_at
    rollout.message = decision.message or rollout.message
    rollout.updated_at = now
    rollout.next_check_at = (
        now + timedelta(seconds=decision.wait_seconds)
        if decision.wait_seconds is not None
        else None
    )
    session.add(rollout)
    return decision.wait_seconds, changes


def _revert(session: Session, rollout: Rollout, nodes: Iterable[str]) -> Changes:
    changes = Changes()
    previous = (
        session.get(ProgramRevision, (rollout.program, rollout.from_generation))
        if rollout.from_generation is not None
        else None
    )
    for node in nodes:
        if previous is None:
            changes.merge(unassign(session, node, rollout.program))
        else:
            changes.merge(
                assign(session, node, rollout.program, previous.generation, previous.spec)
            )
    return changes


def set_rollout_phase(
    session: Session, rollout_id: int, action: Literal["pause", "resume", "abort"]
) -> tuple[Rollout, Changes]:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} does not exist")
    if rollout.phase not in ACTIVE_PHASES:
        raise Conflict(
            f"rollout {rollout_id} is {rollout.phase.value}; only active rollouts can {action}"
        )
    changes = Changes()
    if action == "pause":
        rollout.phase = RolloutPhase.PAUSED
    elif action == "resume":
        rollout.phase, rollout.next_check_at = RolloutPhase.PROGRESSING, utcnow()
    else:
        changes = _revert(session, rollout, rollout.updated_nodes)
        rollout.phase = RolloutPhase.ABORTED
    rollout.message = f"{action} requested"
    rollout.updated_at = utcnow()
    session.add(rollout)
    _event(session, rollout.program, f"Rollout{rollout.phase.value}", rollout.message)
    return rollout, changes


def overdue_rollouts(session: Session, now: datetime, grace_seconds: float) -> list[int]:
    """Active rollouts whose next check is overdue: their task chain was lost."""
    limit = now - timedelta(seconds=grace_seconds)
    rows = session.exec(
        select(Rollout.id).where(
            col(Rollout.phase).in_([RolloutPhase.PROGRESSING, RolloutPhase.BAKING]),
            col(Rollout.next_check_at) < limit,
        )
    ).all()
    return [row for row in rows if row is not None]


def preflight(
    session: Session, manifest: manifests.Manifest, selector: LabelSelector
) -> list[tuple[str, list[features.Missing]]]:
    """For each selected node, what its kernel lacks for this artifact (empty: fine)."""
    verdicts = []
    for name in selected_nodes(session, selector):
        report = features_of(session, name)
        if report is None:
            continue
        verdicts.append((name, features.check(manifest.requirements, report)))
    return verdicts
