"""The agent loop: read desired state, reconcile the kernel to it, report.

The desired state comes from a local file, or in API mode from the assignments file
that ``api_client``'s watcher keeps current; either way a reconcile works from a file,
so an unreachable API never stops one.

Network policies ride along: the desired state's policy part is compiled for this
node's endpoints (the endpoints file, ``BPFLEET_AGENT_ENDPOINTS``) and enforced by the
``netpol`` datapath on their host-side veths. A node no policy applies to runs no
datapath at all: nothing is isolated there, and its pods' traffic pays for nothing.

Stopping the agent never detaches anything: links are pinned, and the next start
adopts them from what the kernel holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NamedTuple

import yaml
from pydantic import ValidationError

from bpfleet_agent import (
    api_client,
    datapath,
    libbpf,
    loading,
    mounts,
    preparing,
    probing,
    reconciling,
)
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, features, files, signing, yamlfiles
from bpfleet_core.netpol import compiling
from bpfleet_core.netpol.models import selects
from bpfleet_core.protocol import (
    POLICY_PROGRAM,
    DesiredState,
    EndpointSet,
    LinkReport,
    MapReport,
    NodeReport,
    PolicyAssignment,
    PolicyReport,
    PolicyState,
    ProgramAssignment,
    ProgramReport,
    ProgramState,
    ProgramStats,
    UnmanagedProgram,
)
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)


class DesiredStateError(ValueError):
    """The desired-state document as a whole cannot be used."""


def describe_validation_error(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'document'}: {item['msg']}"
        for item in error.errors()
    )


class Parsed(NamedTuple):
    """A desired-state document: what is usable, what is not (by program name), and why
    the policy part is not (empty when it is fine or absent)."""

    state: DesiredState
    invalid: dict[str, str]
    policy_error: str = ""


def parse_desired(text: str) -> Parsed:
    """Parse the document; entries that are invalid alone are returned by name with why,
    so one bad program never stops the others (nor the policy part)."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise DesiredStateError(f"not valid YAML: {error}") from error
    return desired_from_document(document)


def parse_assignments(text: str) -> Parsed:
    """``parse_desired`` for the stored assignments, which are JSON (and JSON is not
    quite YAML 1.1)."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise DesiredStateError(f"not valid JSON: {error}") from error
    return desired_from_document(document)


def desired_from_document(document: object) -> Parsed:
    if not isinstance(document, dict):
        raise DesiredStateError("the desired state must be a mapping with 'programs'")
    raw_programs = document.get("programs") or []
    if not isinstance(raw_programs, list):
        raise DesiredStateError("'programs' must be a list")
    try:
        state = DesiredState(revision=document.get("revision", 0))
    except ValidationError as error:
        raise DesiredStateError(describe_validation_error(error)) from error
    invalid: dict[str, str] = {}
    for index, raw in enumerate(raw_programs):
        try:
            assignment = ProgramAssignment.model_validate(raw)
        except ValidationError as error:
            name = raw.get("name") if isinstance(raw, dict) else None
            invalid[str(name or f"programs[{index}]")] = describe_validation_error(error)
            continue
        if assignment.name == POLICY_PROGRAM:
            invalid[assignment.name] = "this name is reserved for the network-policy datapath"
            continue
        if assignment.name in invalid or any(p.name == assignment.name for p in state.programs):
            invalid[assignment.name] = "program name listed twice"
            continue
        state.programs.append(assignment)
    policy_error = ""
    if document.get("policy") is not None:
        try:
            state.policy = PolicyAssignment.model_validate(document["policy"])
        except ValidationError as error:
            policy_error = describe_validation_error(error)
    return Parsed(state, invalid, policy_error)


class EndpointsError(ValueError):
    """The endpoints file cannot be used; the last good one still counts."""


def parse_endpoints(text: str) -> EndpointSet:
    """The endpoints file: ``{endpoints: [...], namespaces: {name: labels}}``, or just
    the list of endpoints; YAML or JSON. Empty: no endpoints."""
    try:
        document = yamlfiles.load(text, "the endpoints file")
    except yaml.YAMLError as error:
        raise EndpointsError(f"not valid YAML: {error}") from error
    if document is None:
        return EndpointSet()
    if isinstance(document, list):
        document = {"endpoints": document}
    try:
        return EndpointSet.model_validate(document)
    except ValidationError as error:
        raise EndpointsError(describe_validation_error(error)) from error


class EndpointsFile:
    """This node's endpoints file, read again only when it changed (a stat per look)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.current: EndpointSet | None = None if path is None else EndpointSet()
        self.error = ""

    def read(self) -> EndpointSet | None:
        """The endpoints (None when no file is configured). A missing file declares
        none; a broken one keeps the last good set, and ``error`` says why."""
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self.current, self.error = None, EndpointSet(), ""
            return self.current
        except OSError as error:
            self.error = f"endpoints file {self.path}: {error}"
            return self.current
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return self.current
        self._stamp = stamp
        try:
            self.current, self.error = parse_endpoints(self.path.read_text()), ""
        except (OSError, EndpointsError) as error:
            self.error = f"endpoints file {self.path}: {error}"
            log.error("%s; keeping the endpoints read before", self.error)
        return self.current


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _now() -> datetime:
    return datetime.now(UTC)


class Agent:
    def __init__(
        self, settings: AgentSettings, report: features.FeatureReport | None = None
    ) -> None:
        self.settings = settings
        mounts.ensure_bpffs(settings.pin_root)
        self.kernel = loading.Kernel(
            pin_root=settings.pin_root,
            tracefs=mounts.ensure_tracefs(),
            cgroup_root=mounts.ensure_cgroup2(),
        )
        settings.pin_root.mkdir(parents=True, exist_ok=True)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.trust = signing.TrustStore.from_paths(settings.trust)
        self.features = report or self._features()
        # Run-time statistics are collected while this fd stays open.
        self._stats_fd = libbpf.enable_run_time_stats() if self.features.bpf_stats else -1
        self._reports: dict[str, ProgramReport] = {}
        self.revision = 0
        self.endpoints = EndpointsFile(settings.endpoints)
        # The policy datapath, what was last applied to it (a digest of the assignment
        # and the local endpoints) and the policies in force, as namespace/name@gen.
        self._policy: datapath.PolicyDatapath | None = None
        self._policy_applied: str | None = None
        self._policy_refs: list[str] = []
        self._policy_report: PolicyReport | None = None
        self._policy_part: tuple[PolicyAssignment, str] | None = None  # and its digest
        # The last desired-state document parsed, by file stamp: a policy part carries
        # the fleet's whole topology, too much to parse again every few seconds.
        self._parsed: tuple[tuple[Path, int, int, int], Parsed] | None = None

    def _features(self) -> features.FeatureReport:
        """The cached report while the kernel is the same one, else a fresh probe."""
        cache = self.settings.features_file
        with contextlib.suppress(OSError, ValidationError):
            cached = features.FeatureReport.load(cache)
            if (
                cached.kernel_release == os.uname().release
                and cached.node == self.settings.node_name
            ):
                return cached
        report = probing.probe(
            self.settings.node_name,
            self.settings.pin_root,
            self.kernel.tracefs,
            self.kernel.cgroup_root,
        )
        files.write_atomically(cache, report.to_json())
        return report

    # ------------------------------------------------------------------ reconcile

    def reconcile(
        self,
        desired: DesiredState,
        invalid: dict[str, str] | None = None,
        held: Mapping[str, preparing.Rejection] | None = None,
        policy_error: str = "",
    ) -> NodeReport:
        """``held`` programs are reported as given and left as they run (e.g. while their
        artifact cannot be downloaded yet); ``held[POLICY_PROGRAM]`` holds the policy
        datapath's artifact the same way."""
        invalid = invalid or {}
        held = held or {}
        observed = loading.observe(self.kernel)
        for assignment in desired.programs:
            if assignment.name in held:
                self._reports[assignment.name] = self._rejected(
                    assignment, held[assignment.name], observed
                )
            else:
                self._reports[assignment.name] = self._reconcile_one(assignment, observed)
        for name, message in invalid.items():
            self._reports[name] = self._with_previous(
                ProgramReport(
                    name=name,
                    state=ProgramState.INVALID,
                    reason="InvalidSpec",
                    message=message,
                    updated_at=_now(),
                ),
                observed.get(name),
            )
        # The policy datapath's pins are the policy reconcile's to keep or remove.
        keep = {a.name for a in desired.programs} | set(invalid) | {POLICY_PROGRAM}
        for name in reconciling.unwanted_programs(keep, observed):
            self._reports[name] = self._remove(name)
        for name in [
            n
            for n, r in self._reports.items()
            if n not in keep and r.state != ProgramState.DETACHED
        ]:
            del self._reports[name]
        self._policy_report = self._reconcile_policy(
            desired.policy, policy_error, held.get(POLICY_PROGRAM), POLICY_PROGRAM in observed
        )
        self.revision = desired.revision
        return self.report()

    # ------------------------------------------------------------------ policies

    def _reconcile_policy(
        self,
        part: PolicyAssignment | None,
        error: str,
        held: preparing.Rejection | None,
        pinned: bool,
    ) -> PolicyReport | None:
        """Enforce the policy part on this node's endpoints; a part that cannot be
        enforced leaves what is enforced in place, and says why. ``pinned``: the
        datapath's pins exist (perhaps from an earlier run)."""
        declared = self.endpoints.read()
        if error:
            return self._policy_status(PolicyState.FAILED, f"policy assignment: {error}")
        if part is None:
            problem = self._remove_policy(pinned)
            return self._policy_status(PolicyState.FAILED, problem) if problem else None
        if part.artifact is None:
            return self._policy_status(
                PolicyState.FAILED, "the fleet API has no netpol artifact to enforce policies with"
            )
        if held is not None:
            state = (
                PolicyState.PENDING if held.state == ProgramState.PENDING else PolicyState.FAILED
            )
            return self._policy_status(state, f"netpol artifact: {held.message}")
        topology = part.topology
        mine = {endpoint.key: endpoint for endpoint in (declared.endpoints if declared else ())}
        assigned = [
            key
            for key, pod in topology.pods.items()
            if pod.node == self.settings.node_name and key in mine and mine[key].ip == pod.ip
        ]
        present = [key for key in assigned if _interface_exists(mine[key].interface)]
        absent = sorted(set(assigned) - set(present))
        notes = [f"no interface for {', '.join(absent)}"] if absent else []
        if not present:
            problem = self._remove_policy(pinned)
            return self._policy_status(
                PolicyState.FAILED if problem else PolicyState.ENFORCING,
                problem or "; ".join([*notes, "none of its endpoints is here to enforce on"]),
            )
        interfaces = sorted({mine[key].interface for key in present})
        if self._policy_part is None or self._policy_part[0] is not part:
            digest = hashlib.sha256(part.model_dump_json(by_alias=True).encode()).hexdigest()
            self._policy_part = (part, digest)
        applied = f"{self._policy_part[1]} {[(key, mine[key].interface) for key in present]}"
        if applied != self._policy_applied or self._policy is None:
            try:
                self._enforce(part, present, interfaces)
            except (datapath.DatapathError, ValueError, libbpf.LibbpfError, OSError) as failure:
                log.error("policy revision %d not enforced: %s", part.revision, failure)
                return self._policy_status(
                    PolicyState.FAILED, f"revision {part.revision} not enforced: {failure}"
                )
            self._policy_applied = applied
            self._policy_refs = [
                assigned_policy.ref
                for assigned_policy in part.policies
                if any(selects(assigned_policy.document, topology, key) for key in present)
            ]
            log.info(
                "policy revision %d enforced on %d endpoint(s): %s",
                part.revision,
                len(present),
                ", ".join(self._policy_refs) or "no policy selects them",
            )
        return self._policy_status(PolicyState.ENFORCING, "; ".join(notes))

    def _enforce(self, part: PolicyAssignment, present: list[str], interfaces: list[str]) -> None:
        assert part.artifact is not None
        desired = datapath.prepare(
            interfaces,
            artifact_dirs=self.settings.artifact_search_dirs,
            trust=self.trust,
            report=self.features,
            name=POLICY_PROGRAM,
            artifact=part.artifact,
        )
        rules = compiling.compile_policies(
            [assigned.document for assigned in part.policies],
            part.topology,
            node_endpoints=set(present),
        )
        if self._policy is None:
            policy = datapath.PolicyDatapath(self.kernel, desired)
            try:
                policy.start(rules.values(), revision=part.revision)
            except BaseException:
                policy.close()
                raise
            self._policy = policy
            return
        # Rules first: a new endpoint's hook never runs without its rules.
        self._policy.apply(rules.values(), part.revision)
        self._policy.attach(desired)

    def _remove_policy(self, pinned: bool) -> str:
        """Detach and unpin the datapath; why not, if it could not be."""
        if self._policy is None and not pinned:
            return ""
        try:
            if self._policy is not None:
                self._policy.remove()
            else:
                loading.remove(self.kernel, POLICY_PROGRAM)  # left by an earlier run
        except (libbpf.LibbpfError, OSError) as error:
            log.error("policy datapath not removed: %s", error)
            return f"the policy datapath could not be removed: {error}"
        log.info("policy datapath removed: no policy applies to this node's endpoints")
        self._policy, self._policy_applied, self._policy_refs = None, None, []
        return ""

    def _policy_status(self, state: PolicyState, message: str) -> PolicyReport:
        """What is in force now (read back from the kernel), in ``state``."""
        if self.endpoints.error:
            message = "; ".join(part for part in (message, self.endpoints.error) if part)
        enforced = None
        if self._policy is not None:
            try:
                enforced = self._policy.enforced(per_rule=False)
            except (libbpf.LibbpfError, OSError) as error:
                message = "; ".join(part for part in (message, f"counters: {error}") if part)
        return PolicyReport(
            state=state,
            message=message,
            revision=enforced.revision if enforced else None,
            policies=list(self._policy_refs) if enforced else [],
            endpoints=enforced.endpoints if enforced else 0,
            rules=enforced.rules if enforced else 0,
            entries=enforced.entries if enforced else 0,
            allowed=enforced.allowed if enforced else 0,
            denied=enforced.denied if enforced else 0,
            audit_denied=enforced.audit_denied if enforced else 0,
            updated_at=_now(),
        )

    def _reconcile_one(
        self, assignment: ProgramAssignment, observed: dict[str, reconciling.ObservedProgram]
    ) -> ProgramReport:
        ref = assignment.spec.artifact
        base = {
            "name": assignment.name,
            "artifact": f"{ref.name}@{ref.version}",
            "updated_at": _now(),
        }
        prepared = preparing.prepare(
            assignment,
            artifact_dirs=self.settings.artifact_search_dirs,
            trust=self.trust,
            report=self.features,
        )
        if isinstance(prepared, preparing.Rejection):
            return self._rejected(assignment, prepared, observed)
        base["digest"] = prepared.manifest.object.sha256
        try:
            loading.apply(self.kernel, prepared, observed.get(assignment.name))
        except loading.LoadFailure as failure:
            report = ProgramReport(
                **base,
                state=ProgramState.LOAD_FAILED,
                reason="VerifierRejected" if failure.verifier_log else "LoadError",
                message=str(failure),
                verifier_log=failure.verifier_log,
            )
            return self._with_previous(report, observed.get(assignment.name))
        except (loading.AttachFailure, libbpf.LibbpfError, OSError) as failure:
            report = ProgramReport(
                **base, state=ProgramState.ATTACH_FAILED, reason="AttachError", message=str(failure)
            )
            return self._with_previous(report, observed.get(assignment.name))
        return self._describe_attached(ProgramReport(**base, state=ProgramState.ATTACHED), prepared)

    def _rejected(
        self,
        assignment: ProgramAssignment,
        rejection: preparing.Rejection,
        observed: dict[str, reconciling.ObservedProgram],
    ) -> ProgramReport:
        ref = assignment.spec.artifact
        report = ProgramReport(
            name=assignment.name,
            artifact=f"{ref.name}@{ref.version}",
            updated_at=_now(),
            state=rejection.state,
            reason=rejection.reason,
            message=rejection.message,
        )
        return self._with_previous(report, observed.get(assignment.name))

    def _with_previous(
        self, report: ProgramReport, observed: reconciling.ObservedProgram | None
    ) -> ProgramReport:
        """A rejected change leaves the running version alone; say so."""
        if observed is None or not any(link.alive for link in observed.links.values()):
            return report
        return report.model_copy(
            update={"message": f"{report.message} (the previous version stays attached)"}
        )

    def _remove(self, name: str) -> ProgramReport:
        try:
            loading.remove(self.kernel, name)
        except (libbpf.LibbpfError, OSError) as error:
            return ProgramReport(
                name=name,
                state=ProgramState.ATTACH_FAILED,
                reason="DetachError",
                message=str(error),
                updated_at=_now(),
            )
        return ProgramReport(
            name=name,
            state=ProgramState.DETACHED,
            reason="RemovedFromDesiredState",
            message="detached and unpinned",
            updated_at=_now(),
        )

    def _describe_attached(self, report: ProgramReport, desired: loading.Desired) -> ProgramReport:
        observed = loading.observe(self.kernel).get(desired.name)
        assert observed is not None
        program_ids = dict(observed.versions.get(desired.tag, {}))
        hooks = {hook.link_name: hook for hook in desired.hooks}
        links = [
            LinkReport(
                name=link.name,
                entry_point=hooks[link.name].entry_point,
                hook=hooks[link.name].describe(),
                link_id=link.link_id,
                program_id=link.program_id,
            )
            for link in observed.links.values()
            if link.name in hooks
        ]
        stats = {
            entry: ProgramStats(
                program_id=info.id, run_count=info.run_count, run_time_ns=info.run_time_ns
            )
            for entry, info in loading.program_stats(self.kernel, desired.name, desired.tag).items()
        }
        maps = [
            MapReport(
                name=m.name,
                map_id=m.map_id,
                type=m.type,
                max_entries=m.max_entries,
                entries=m.entries,
            )
            for m in loading.map_summaries(self.kernel, desired.name, desired.tag)
        ]
        unmanaged = [
            UnmanagedProgram(hook=u.hook, program_id=u.program_id, program_name=u.program_name)
            for u in loading.unmanaged_programs(
                self.kernel, desired.hooks, set(program_ids.values())
            )
        ]
        message = f"{len(links)} link(s) attached"
        return report.model_copy(
            update={
                "program_ids": program_ids,
                "links": links,
                "stats": stats,
                "maps": maps,
                "unmanaged": unmanaged,
                "message": message,
            }
        )

    def report(self, error: str = "") -> NodeReport:
        return NodeReport(
            node=self.settings.node_name,
            revision=self.revision,
            programs=sorted(self._reports.values(), key=lambda r: r.name),
            reported_at=_now(),
            error=error,
            policy=self._policy_report,
        )

    # ------------------------------------------------------------------ loop

    def reconcile_file(self, path: Path) -> NodeReport:
        """Reconcile to the desired-state file; an unreadable file changes nothing."""
        try:
            parsed = self._parse(path, parse_desired)
        except (OSError, DesiredStateError) as error:
            message = f"desired state {path}: {error}"
            log.error("%s; keeping what runs", message)
            report = self.report(error=message)
        else:
            report = self.reconcile(parsed.state, parsed.invalid, policy_error=parsed.policy_error)
        files.write_atomically(
            self.settings.status_file, report.model_dump_json(by_alias=True, indent=2)
        )
        return report

    def reconcile_assignments(self, link: api_client.FleetLink) -> NodeReport | None:
        """Reconcile to the stored assignments, downloading missing artifacts first;
        None (and nothing touched) until the API has sent any."""
        path = self.settings.assignments_file
        try:
            parsed = self._parse(path, parse_assignments)
        except FileNotFoundError:
            # Reconciling to "nothing" now would detach what an earlier run attached.
            return None
        except (OSError, DesiredStateError) as error:
            message = f"assignments {path}: {error}"
            log.error("%s; keeping what runs", message)
            report = self.report(error=message)
        else:
            report = self.reconcile(
                parsed.state,
                parsed.invalid,
                self._fetch_artifacts(parsed.state, link),
                parsed.policy_error,
            )
        files.write_atomically(
            self.settings.status_file, report.model_dump_json(by_alias=True, indent=2)
        )
        return report

    def _parse(self, path: Path, parse: Callable[[str], Parsed]) -> Parsed:
        """``parse`` of the file, reused while the file is unchanged."""
        stat = path.stat()
        stamp = (path, stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._parsed is not None and self._parsed[0] == stamp:
            return self._parsed[1]
        parsed = parse(path.read_text())
        self._parsed = (stamp, parsed)
        return parsed

    def _fetch_artifacts(
        self, desired: DesiredState, link: api_client.FleetLink
    ) -> dict[str, preparing.Rejection]:
        """Download what the assignments pin by digest and no artifact directory holds;
        programs whose artifact is still missing are held, saying why."""
        held: dict[str, preparing.Rejection] = {}
        wanted = [(assignment.name, assignment.spec.artifact) for assignment in desired.programs]
        if desired.policy is not None and desired.policy.artifact is not None:
            wanted.append((POLICY_PROGRAM, desired.policy.artifact))
        for name, ref in wanted:
            # Without a digest there is nothing to ask the API for; ``prepare`` looks
            # the artifact up by name and version alone.
            if ref.digest is None or self._has_artifact(ref):
                continue
            problem = link.fetch_artifact(ref)
            if problem is not None:
                held[name] = preparing.Rejection(problem.state, problem.reason, problem.message)
        return held

    def _has_artifact(self, ref: ArtifactRef) -> bool:
        """Whether the copy ``prepare`` will pick is the build the digest pins."""
        files = preparing.locate(ref, self.settings.artifact_search_dirs)
        try:
            return files is not None and artifacts.sha256_file(files.object) == ref.digest
        except OSError:
            return False

    def _follow_kernel(self, link: api_client.FleetLink) -> None:
        """After a kernel change the cached feature report is wrong: probe again, and
        tell the API, which re-checks this node's programs against the new report."""
        if self.features.kernel_release == os.uname().release:
            return
        log.info(
            "kernel changed from %s to %s; probing features again",
            self.features.kernel_release,
            os.uname().release,
        )
        self.features = self._features()
        link.features_probed(self.features)

    def run_with_api(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """API mode. Threads: this one reconciles; ``link``'s watcher long-polls and sets
        ``wake`` on new assignments, its reporter sends reports. Setting ``stop`` (and
        ``wake``, to cut the wait short) ends the loop."""
        wake = wake or threading.Event()
        link = api_client.FleetLink(self.settings, features=lambda: self.features, wake=wake)
        log.info(
            "agent %s following the fleet API at %s", self.settings.node_name, self.settings.api_url
        )
        link.features_probed(self.features)
        link.start()
        try:
            while not stop.is_set():
                # Cleared before reading, so assignments arriving meanwhile wake the next round.
                wake.clear()
                self._follow_kernel(link)
                declared = self.endpoints.read()
                if declared is not None:
                    link.endpoints_declared(declared)
                report = self.reconcile_assignments(link)
                if report is not None:
                    link.submit(report)
                wake.wait(self.settings.poll_interval)
        finally:
            link.close()
        log.info("agent stopping; everything attached stays attached")

    def run(self, stop: threading.Event) -> None:
        log.info(
            "agent %s reconciling %s every %.1fs",
            self.settings.node_name,
            self.settings.desired_state,
            self.settings.poll_interval,
        )
        while not stop.is_set():
            self.reconcile_file(self.settings.desired_state)
            stop.wait(self.settings.poll_interval)
        log.info("agent stopping; everything attached stays attached")


def run_forever(settings: AgentSettings) -> None:
    stop = threading.Event()
    wake = threading.Event()

    def request_stop(_signal: int, _frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    agent = Agent(settings)
    if settings.api_mode:
        agent.run_with_api(stop, wake)
    else:
        agent.run(stop)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_forever(AgentSettings())
