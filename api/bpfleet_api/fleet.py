"""Fleet state operations over the database: the API's single-writer logic.

Routes and tasks are thin shells around these functions. Each function changes the
session but never commits: the caller commits once, then wakes the nodes whose
assignments changed (see ``notify``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, literal
from sqlalchemy import delete as sa_delete
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import defer
from sqlmodel import Session, SQLModel, col, select

from bpfleet_api import db, policies, rollouts, security
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
            changes.merge(assign(session, node.name, program.name, program.generation))
    return changes


def _settled(session: Session, program: str, generation: int) -> bool:
    latest = latest_rollout(session, program)
    return latest is None or (
        latest.to_generation == generation and latest.phase == RolloutPhase.SUCCEEDED
    )


# ------------------------------------------------------------------------ assignments
#
# Steps move thousands of nodes at once: assignments are written set-based, a few
# statements per chunk of nodes whatever their number, node rows locked in name order
# (so two writers of several nodes never wait on each other in opposite orders).

CHUNK = 2000  # names per statement: well under SQLite's bound parameters


def _chunks(names: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(set(names))
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def _bump_many(session: Session, names: list[str]) -> None:
    """Grow these nodes' revisions by one, taking their rows in name order."""
    session.flush()
    session.execute(
        sa_select(col(Node.name))
        .where(col(Node.name).in_(names))
        .order_by(col(Node.name))
        .with_for_update()
    ).all()
    session.execute(
        sa_update(Node)
        .where(col(Node.name).in_(names))
        .values(desired_revision=col(Node.desired_revision) + 1)
    )


def _forget_loaded(session: Session) -> None:
    """Set-based writes went around the identity map: reload nodes and assignments."""
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, Node | Assignment):
            session.expire(loaded)


def assign_many(session: Session, nodes: Iterable[str], program: str, generation: int) -> Changes:
    """Move ``nodes`` to ``generation`` of ``program`` (idempotent: nodes already there
    are left alone and not woken)."""
    changes = Changes()
    for chunk in _chunks(nodes):
        there = set(
            session.exec(
                select(Assignment.node).where(
                    Assignment.program == program,
                    Assignment.generation == generation,
                    col(Assignment.node).in_(chunk),
                )
            ).all()
        )
        moving = [name for name in chunk if name not in there]
        if not moving:
            continue
        _bump_many(session, moving)
        rows = sa_select(
            col(Node.name), literal(program), literal(generation), col(Node.desired_revision)
        )
        statement = db.insert_for(session, Assignment).from_select(
            ["node", "program", "generation", "revision"],
            rows.where(col(Node.name).in_(moving)).order_by(col(Node.name)),
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["node", "program"],
                set_={
                    "generation": statement.excluded.generation,
                    "revision": statement.excluded.revision,
                },
            )
        )
        changes.nodes.update(moving)
    _forget_loaded(session)
    return changes


def unassign_many(session: Session, nodes: Iterable[str], program: str) -> Changes:
    changes = Changes()
    for chunk in _chunks(nodes):
        there = list(
            session.exec(
                select(Assignment.node).where(
                    Assignment.program == program, col(Assignment.node).in_(chunk)
                )
            ).all()
        )
        if not there:
            continue
        _bump_many(session, sorted(there))
        session.execute(
            sa_delete(Assignment).where(
                col(Assignment.program) == program, col(Assignment.node).in_(there)
            )
        )
        changes.nodes.update(there)
    _forget_loaded(session)
    return changes


def assign(session: Session, node: str, program: str, generation: int) -> Changes:
    current = session.get(Assignment, (node, program))
    if current is not None and current.generation == generation:
        return Changes()  # already so: idempotent
    revision = bump_revision(session, node)
    current = current or Assignment(
        node=node, program=program, generation=generation, revision=revision
    )
    current.generation, current.revision = generation, revision
    session.add(current)
    return Changes({node})


def unassign(session: Session, node: str, program: str) -> Changes:
    current = session.get(Assignment, (node, program))
    if current is None:
        return Changes()
    bump_revision(session, node)
    session.delete(current)
    return Changes({node})


@dataclass(frozen=True)
class AssignedSpec:
    """One program of a node's desired state: which spec (by program and generation)."""

    program: str
    generation: int
    spec_id: str  # the revision's creation time: a restored database may reuse generations


def desired_of(session: Session, name: str) -> tuple[int, list[AssignedSpec]] | None:
    """A node's revision and what it is assigned (in one statement, no spec read); None
    for an unknown node."""
    rows = session.execute(
        sa_select(
            col(Node.desired_revision),
            col(Assignment.program),
            col(Assignment.generation),
            col(ProgramRevision.created_at),
        )
        .select_from(Node)
        .outerjoin(Assignment, col(Assignment.node) == col(Node.name))
        .outerjoin(
            ProgramRevision,
            (col(ProgramRevision.program) == col(Assignment.program))
            & (col(ProgramRevision.generation) == col(Assignment.generation)),
        )
        .where(col(Node.name) == name)
        .order_by(col(Assignment.program))
    ).all()
    if not rows:
        return None
    programs = [
        AssignedSpec(program, generation, str(created))
        for _, program, generation, created in rows
        if program is not None
    ]
    return int(rows[0][0]), programs


def spec_of(session: Session, program: str, generation: int) -> dict[str, Any]:
    revision = session.get(ProgramRevision, (program, generation))
    if revision is None:
        raise NotFound(f"program {program} generation {generation} is gone")
    return revision.spec


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
        select(Assignment.program, ProgramRevision.spec)
        .join(
            ProgramRevision,
            (col(ProgramRevision.program) == col(Assignment.program))
            & (col(ProgramRevision.generation) == col(Assignment.generation)),
        )
        .where(Assignment.node == node.name)
        .order_by(col(Assignment.program))
    ).all()
    return Assignments(
        node=node.name,
        revision=node.desired_revision,
        programs=[
            ProgramAssignment(name=program, spec=BpfProgramSpec.model_validate(spec))
            for program, spec in rows
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
        session.execute(sa_delete(Artifact).where(col(Artifact.digest).in_(removed)))
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
) -> tuple[Program, Rollout | None, bool]:
    """Store a program's desired spec; a change starts a rollout (returned, with True).
    The same spec again is a no-op: the latest rollout, and False (its task chain runs
    already; starting another would advance it twice)."""
    if name == POLICY_PROGRAM:
        raise Invalid(f"the program name {name} is reserved for the network-policy datapath")
    pinned, _ = resolve_spec(session, spec)
    stored = pinned.model_dump(mode="json", by_alias=True)
    program = session.get(Program, name)
    if program is not None and program.spec == stored and not program.killed:
        return program, latest_rollout(session, name), False
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
    return program, rollout, True


def get_program(session: Session, name: str) -> Program:
    program = session.get(Program, name)
    if program is None:
        raise NotFound(f"program {name} does not exist")
    return program


def _unassign_everywhere(session: Session, name: str) -> Changes:
    nodes = session.exec(select(Assignment.node).where(Assignment.program == name)).all()
    return unassign_many(session, nodes, name)


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
    """Store what one node says it runs (see ``record_reports``)."""
    del node  # read again with the others
    record_reports(session, [report], events_kept)


def record_reports(session: Session, reports: Sequence[NodeReport], events_kept: int) -> None:
    """Store what nodes say they run, many reports in a few statements; attribute each
    state to the generation it is about.

    A node's word is bounded: states are kept only for programs it was assigned (or
    still has a state for, while one is being removed), its revision never passes the
    one it was sent, and each program keeps its ``events_kept`` newest events.

    Idempotent: a report no newer than the one a row holds changes nothing (a batch
    delivered twice, or out of order), and events are written for changes of state only.
    """
    newest: dict[str, NodeReport] = {}
    for report in reports:  # one report per node: its newest
        held = newest.get(report.node)
        if held is None or aware(report.reported_at) >= aware(held.reported_at):
            newest[report.node] = report
    if not newest:
        return
    names = sorted(newest)
    nodes = {
        name: (desired, applied)
        for name, desired, applied in session.execute(
            sa_select(col(Node.name), col(Node.desired_revision), col(Node.applied_revision))
            .where(col(Node.name).in_(names))
            .order_by(col(Node.name))
            .with_for_update()
        ).all()
    }
    assigned: dict[tuple[str, str], tuple[int, int]] = {
        (node, program): (generation, revision)
        for node, program, generation, revision in session.execute(
            sa_select(
                col(Assignment.node),
                col(Assignment.program),
                col(Assignment.generation),
                col(Assignment.revision),
            ).where(col(Assignment.node).in_(names))
        ).all()
    }
    held_rows = {
        (row.node, row.program): row
        for row in session.exec(
            select(NodeProgramStatus)
            .options(defer(NodeProgramStatus.report))  # type: ignore[arg-type]
            .where(col(NodeProgramStatus.node).in_(names))
        ).all()
    }
    now = utcnow()
    applied_updates = []
    upserts: list[dict[str, Any]] = []
    removals: list[tuple[str, str]] = []
    events: list[dict[str, Any]] = []
    for name in names:
        report = newest[name]
        if name not in nodes:
            continue  # deleted meanwhile
        desired, applied = nodes[name]
        claimed = max(applied, min(report.revision, desired))
        applied_updates.append({"node_name": name, "applied": claimed})
        for program_report in report.programs:
            key = (name, program_report.name)
            assignment = assigned.get(key)
            status = held_rows.get(key)
            if (
                status is not None
                and status.reported_at is not None
                and aware(status.reported_at) > aware(report.reported_at)
            ):
                continue  # a newer report is stored already
            if assignment is None and program_report.state == ProgramState.DETACHED:
                if status is not None:
                    removals.append(key)
                    events.append(
                        _event_row(
                            program_report.name,
                            name,
                            ProgramState.DETACHED.value,
                            program_report.message or "detached from the node",
                            now,
                        )
                    )
                continue
            if assignment is None and status is None:
                continue  # never assigned here: nothing to keep
            generation = status.generation if status is not None else None
            if assignment is not None and report.revision >= assignment[1]:
                generation = assignment[0]
            if status is None or (
                status.state != program_report.state.value or status.reason != program_report.reason
            ):
                events.append(
                    _event_row(
                        program_report.name,
                        name,
                        program_report.state.value,
                        program_report.message or program_report.reason,
                        now,
                    )
                )
            upserts.append(
                {
                    "node": name,
                    "program": program_report.name,
                    "generation": generation,
                    "state": program_report.state.value,
                    "reason": program_report.reason,
                    "message": program_report.message,
                    "report": program_report.model_dump(mode="json", by_alias=True),
                    "reported_at": report.reported_at,
                    "updated_at": now,
                }
            )
    _write_reports(session, applied_updates, upserts, removals)
    if events:
        session.execute(sa_insert(SQLModel.metadata.tables["event"]), events)
    for program in sorted({event["program"] for event in events}):
        prune_events(session, program, events_kept)


def _event_row(program: str, node: str, reason: str, message: str, at: datetime) -> dict[str, Any]:
    return {
        "program": program,
        "node": node,
        "reason": reason,
        "message": message,
        "created_at": at,
    }


def _write_reports(
    session: Session,
    applied: list[dict[str, Any]],
    upserts: list[dict[str, Any]],
    removals: list[tuple[str, str]],
) -> None:
    """The writes of ``record_reports``: one statement each, whatever the batch's size."""
    if applied:
        table = SQLModel.metadata.tables["node"]
        session.connection().execute(
            sa_update(table)
            .where(table.c.name == bindparam("node_name"))
            .values(applied_revision=bindparam("applied"), last_heartbeat=utcnow()),
            applied,
        )
    if upserts:
        statement = db.insert_for(session, NodeProgramStatus)
        columns = ("generation", "state", "reason", "message", "report", "reported_at")
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["node", "program"],
                set_={
                    **{name: getattr(statement.excluded, name) for name in columns},
                    "updated_at": statement.excluded.updated_at,
                },
            ),
            upserts,
        )
    for node, program in removals:
        session.execute(
            sa_delete(NodeProgramStatus).where(
                col(NodeProgramStatus.node) == node, col(NodeProgramStatus.program) == program
            )
        )
    _forget_loaded(session)


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
        session.execute(
            sa_delete(Event).where(col(Event.program) == program, col(Event.id) <= cutoff)
        )


def summarize(session: Session, program: Program) -> Summary:
    """Counts of a program's nodes by state, counted by the database: an assignment
    joined with its node's status for the same generation (none yet: pending)."""
    status = NodeProgramStatus
    rows = session.execute(
        sa_select(col(status.state), func.count())
        .select_from(Assignment)
        .outerjoin(
            status,
            (col(status.node) == col(Assignment.node))
            & (col(status.program) == col(Assignment.program))
            & (col(status.generation) == col(Assignment.generation)),
        )
        .where(col(Assignment.program) == program.name)
        .group_by(col(status.state))
    ).all()
    counts = {"attached": 0, "failed": 0, "incompatible": 0, "pending": 0}
    desired = 0
    for state, number in rows:
        desired += number
        if state == ProgramState.ATTACHED.value:
            counts["attached"] += number
        elif state == ProgramState.INCOMPATIBLE.value:
            counts["incompatible"] += number
        elif state is not None and ProgramState(state) in rollouts.FAILED_STATES:
            counts["failed"] += number
        else:
            counts["pending"] += number
    return Summary(desired=desired, **counts)


# --------------------------------------------------------------------------- rollouts


def unreachable_nodes(session: Session, now: datetime, ready_seconds: float) -> set[str]:
    """Nodes whose heartbeats stopped (NotReady or Unknown): one statement."""
    cutoff = now - timedelta(seconds=ready_seconds)
    heartbeat = col(Node.last_heartbeat)
    return set(
        session.exec(select(Node.name).where(heartbeat.is_(None) | (heartbeat < cutoff))).all()
    )


def progress_of(rollout: Rollout) -> rollouts.Progress:
    return rollouts.Progress(
        rollout.phase,
        rollout.step,
        tuple(rollout.updated_nodes),
        aware(rollout.step_settled_at) if rollout.step_settled_at else None,
        aware(rollout.step_started_at) if rollout.step_started_at else None,
        tuple(rollout.skipped_nodes),
    )


def outcomes_of(session: Session, program: str, generation: int) -> dict[str, ProgramState]:
    """Each node's state for this generation of a program (columns only, no reports)."""
    rows = session.execute(
        sa_select(col(NodeProgramStatus.node), col(NodeProgramStatus.state)).where(
            col(NodeProgramStatus.program) == program,
            col(NodeProgramStatus.generation) == generation,
        )
    ).all()
    return {node: ProgramState(state) for node, state in rows}


def advance_rollout(
    session: Session,
    rollout_id: int,
    now: datetime,
    tick_seconds: float,
    *,
    ready_seconds: float,
    chain: int | None = None,
) -> tuple[float | None, Changes]:
    """Take the next step of one rollout; return when to look again and what changed.
    A task of another ``chain`` than the rollout's own does nothing (and ends its chain)."""
    rollout = session.exec(
        select(Rollout).where(Rollout.id == rollout_id).with_for_update()
    ).first()
    if rollout is None or rollout.phase not in ACTIVE_PHASES:
        return None, Changes()
    if chain is not None and chain != rollout.chain:
        return None, Changes()
    spec = BpfProgramSpec.model_validate(spec_of(session, rollout.program, rollout.to_generation))
    selected = selected_nodes(session, spec.node_selector)
    outcomes = outcomes_of(session, rollout.program, rollout.to_generation)
    decision = rollouts.decide(
        progress_of(rollout),
        spec.rollout,
        selected,
        outcomes,
        now,
        tick_seconds,
        unreachable_nodes(session, now, ready_seconds),
    )
    changes = assign_many(session, decision.assign_new, rollout.program, rollout.to_generation)
    if decision.revert:
        changes.merge(_revert(session, rollout, decision.revert))
    if decision.progress.phase == RolloutPhase.SUCCEEDED:
        chosen = set(selected)
        assigned = session.exec(
            select(Assignment.node).where(Assignment.program == rollout.program)
        ).all()
        changes.merge(
            unassign_many(session, [n for n in assigned if n not in chosen], rollout.program)
        )
    if decision.progress.phase != rollout.phase:
        _event(
            session, rollout.program, f"Rollout{decision.progress.phase.value}", decision.message
        )
    progress = decision.progress
    rollout.phase, rollout.step = progress.phase, progress.step
    if len(progress.updated_nodes) != len(rollout.updated_nodes):  # only ever grows
        rollout.updated_nodes = list(progress.updated_nodes)
    if len(progress.skipped_nodes) != len(rollout.skipped_nodes):
        rollout.skipped_nodes = list(progress.skipped_nodes)
    rollout.step_settled_at = progress.step_settled_at
    rollout.step_started_at = progress.step_started_at
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
    if rollout.from_generation is None:
        return unassign_many(session, nodes, rollout.program)
    return assign_many(session, nodes, rollout.program, rollout.from_generation)


def new_chain(session: Session, rollout_id: int) -> int | None:
    """Start a new task chain for an active rollout (the one before it stops at its next
    task); None when the rollout is not active."""
    rollout = session.exec(
        select(Rollout).where(Rollout.id == rollout_id).with_for_update()
    ).first()
    if rollout is None or rollout.phase not in ACTIVE_PHASES:
        return None
    rollout.chain += 1
    session.add(rollout)
    return rollout.chain


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
