"""The agent loop: read desired state, reconcile the kernel to it, report.

The desired state comes from a local file, or in API mode from the assignments file
that ``fleetlink``'s watcher keeps current; either way a reconcile works from a file,
so an unreachable API never stops one.

Network policies ride along: the desired state's policy part is enforced by
``enforcing.PolicyEnforcer`` on this node's endpoints (the endpoints file,
``BPFLEET_AGENT_ENDPOINTS``).

Stopping the agent never detaches anything: links are pinned, and the next start
adopts them from what the kernel holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from bpfleet_agent import (
    libbpf,
    loading,
    mounts,
    pins,
    preparing,
    probing,
    reconciling,
)
from bpfleet_agent.artifact_cache import ArtifactCache
from bpfleet_agent.desired import (
    DesiredStateError,
    EndpointsFile,
    Parsed,
    desired_from_document,
    parse_assignments,
    parse_desired,
)
from bpfleet_agent.enforcing import PolicyEnforcer
from bpfleet_agent.fleetlink import FleetLink, Stamp, file_stamp
from bpfleet_agent.gcpause import gc_paused
from bpfleet_agent.permits import NodePermits
from bpfleet_agent.policyparts import PolicyPartReader
from bpfleet_agent.settings import AgentSettings
from bpfleet_agent.trust import TrustFiles
from bpfleet_core import artifacts, features, files, signing
from bpfleet_core.protocol import (
    POLICY_ARTIFACT,
    POLICY_PROGRAM,
    DesiredState,
    LinkReport,
    MapReport,
    NodeReport,
    PolicyReport,
    ProgramAssignment,
    ProgramReport,
    ProgramState,
    ProgramStats,
    UnmanagedProgram,
)

log = logging.getLogger(__name__)
# What stopping may take, a reconcile in progress aside: the last report, threads joined.
STOP_SECONDS = 1.5


def _now() -> datetime:
    return datetime.now(UTC)


# Verification failures that say no trusted key vouches for the object (as opposed to
# files missing, or an object or name that is not the one asked for).
_UNTRUSTED = frozenset(
    {artifacts.RejectionReason.BAD_SIGNATURE.value, artifacts.RejectionReason.UNSIGNED.value}
)


def _runs_what_was_rejected(
    assignment: ProgramAssignment,
    rejection: preparing.Rejection,
    running: reconciling.ObservedProgram | None,
) -> bool:
    """Whether the links run the very object (and config) whose signature no trusted key
    verifies any more: the load tag names object digest and config, so a rejected new
    version never counts against the trusted one still running."""
    if (
        rejection.state != ProgramState.SIGNATURE_REJECTED
        or rejection.reason not in _UNTRUSTED
        or rejection.digest is None
        or running is None
        or not any(link.alive for link in running.links.values())
    ):
        return False
    return running.current_tag() == pins.load_tag(rejection.digest, dict(assignment.spec.config))


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
        # Read whole now or the agent does not start; read again whenever it changes.
        self.trust_files = TrustFiles(settings.trust)
        self.features = report or self._features()
        # Run-time statistics are collected while this fd stays open.
        self._stats_fd = libbpf.enable_run_time_stats() if self.features.bpf_stats else -1
        self._reports: dict[str, ProgramReport] = {}
        self.revision = 0
        self.endpoints = EndpointsFile(settings.endpoints)
        self.permits = NodePermits(
            attach_kinds=frozenset(settings.allowed_attach_kinds),
            interfaces=tuple(settings.allowed_interfaces),
            cgroups=tuple(settings.allowed_cgroups),
            minimum_versions=dict(settings.minimum_versions),
        )
        self.policy = PolicyEnforcer(
            self.kernel,
            node_name=settings.node_name,
            artifact_dirs=settings.artifact_search_dirs,
            endpoints=self.endpoints,
            permits=self.permits,
        )
        self._policy_report: PolicyReport | None = None
        # The last desired-state document parsed, by file stamp: a policy part may carry
        # thousands of rules, too much to parse again every few seconds. The reader
        # reads each new part reusing what the one before had.
        self._parsed: tuple[Stamp, Parsed] | None = None
        self.policy_reader = PolicyPartReader()
        # The assignments document the watcher decoded, with the stamp of the file it
        # stored it in (set from the watcher's thread).
        self._handed: tuple[Stamp, dict[str, Any]] | None = None

    @property
    def trust(self) -> signing.TrustStore:
        """The trust store as its files say now (a removed key counts at once)."""
        return self.trust_files.current()

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
        self._policy_report = self.policy.reconcile(
            desired.policy,
            policy_error,
            held.get(POLICY_PROGRAM),
            POLICY_PROGRAM in observed,
            trust=self.trust,
            report=self.features,
        )
        self.policy_reader.release()  # the part before, now this one is enforced
        self.revision = desired.revision
        return self.report()

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
            permits=self.permits,
        )
        if isinstance(prepared, preparing.Rejection):
            return self._rejected(assignment, prepared, observed)
        base["digest"] = prepared.manifest.object.sha256
        try:
            loading.apply(self.kernel, prepared, observed.get(assignment.name))
        except loading.NotLoaded as failure:
            report = ProgramReport(
                **base,
                state=ProgramState.LOAD_FAILED,
                reason="VerifierRejected" if failure.verifier_log else "LoadError",
                message=str(failure),
                verifier_log=failure.verifier_log,
            )
            return self._with_previous(report, observed.get(assignment.name))
        except (loading.NotAttached, libbpf.LibbpfError, OSError) as failure:
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
        running = observed.get(assignment.name)
        if not _runs_what_was_rejected(assignment, rejection, running):
            return self._with_previous(report, running)
        # The version that runs is the very object no trusted key vouches for any more.
        if not self.settings.detach_untrusted:
            return report.model_copy(
                update={
                    "message": f"{report.message} (no trusted key vouches for the running "
                    "version any more; it stays attached, as BPFLEET_AGENT_DETACH_UNTRUSTED "
                    "is false)"
                }
            )
        if not self.trust_files.whole:
            # A trust store read in part (or empty) is no reason to take programs down.
            return report.model_copy(
                update={
                    "message": f"{report.message} (the running version stays attached until "
                    "the trust store can be read whole)"
                }
            )
        log.warning("detaching %s: no trusted key vouches for it any more", assignment.name)
        removed = self._remove(assignment.name)
        if removed.state != ProgramState.DETACHED:
            return report.model_copy(
                update={"message": f"{report.message}; detaching it failed: {removed.message}"}
            )
        return report.model_copy(
            update={
                "message": f"{report.message} (detached: no trusted key vouches for the "
                "version that ran; BPFLEET_AGENT_DETACH_UNTRUSTED)"
            }
        )

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
        """The node's report; ``error``: why the desired state could not be used."""
        trust = [f"trust store: {problem}" for problem in self.trust_files.problems]
        return NodeReport(
            node=self.settings.node_name,
            revision=self.revision,
            programs=sorted(self._reports.values(), key=lambda r: r.name),
            reported_at=_now(),
            error="; ".join(part for part in (error, *trust) if part),
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

    def reconcile_assignments(self, cache: ArtifactCache) -> NodeReport | None:
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
                self._fetch_artifacts(parsed.state, cache),
                parsed.policy_error,
            )
        files.write_atomically(
            self.settings.status_file, report.model_dump_json(by_alias=True, indent=2)
        )
        return report

    def hand_over(self, stamp: Stamp, document: dict[str, Any]) -> None:
        """The watcher stored ``document`` in the file now stamped ``stamp``."""
        self._handed = (stamp, document)

    def _parse(self, path: Path, parse: Callable[[str, PolicyPartReader], Parsed]) -> Parsed:
        """``parse`` of the file, reused while the file is unchanged (or the document the
        watcher stored in it, already decoded)."""
        stamp = file_stamp(path)
        if self._parsed is not None and self._parsed[0] == stamp:
            return self._parsed[1]
        handed = self._handed
        if handed is not None and handed[0] == stamp:
            with gc_paused():
                parsed = desired_from_document(handed[1], self.policy_reader)
        else:
            try:
                text = path.read_bytes().decode()
            except UnicodeDecodeError as error:
                raise DesiredStateError(f"not UTF-8 text ({error})") from error
            with gc_paused():
                parsed = parse(text, self.policy_reader)
        self._parsed = (stamp, parsed)
        self._handed = None
        return parsed

    def _fetch_artifacts(
        self, desired: DesiredState, cache: ArtifactCache
    ) -> dict[str, preparing.Rejection]:
        """Download what the assignments pin by digest and no artifact directory holds;
        programs whose artifact is still missing are held, saying why."""
        held: dict[str, preparing.Rejection] = {}
        wanted = [(assignment.name, assignment.spec.artifact) for assignment in desired.programs]
        artifact = desired.policy.artifact if desired.policy else None
        # Only the netpol artifact enforces policies; the enforcer says so of any other.
        if artifact is not None and artifact.name == POLICY_ARTIFACT:
            wanted.append((POLICY_PROGRAM, artifact))
        for name, ref in wanted:
            # Without a digest there is nothing to ask the API for; ``prepare`` looks
            # the artifact up by name and version alone.
            if ref.digest is None:
                continue
            problem = cache.ensure(ref)
            if problem is not None:
                held[name] = problem
        return held

    def _follow_kernel(self, link: FleetLink) -> None:
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
        link = FleetLink(
            self.settings,
            features=lambda: self.features,
            wake=wake,
            hand_over=self.hand_over,
            delivered=lambda report: self.policy.delivered(report.policy),
        )
        cache = ArtifactCache(self.settings, link.credential, trust=lambda: self.trust, wake=wake)
        log.info(
            "agent %s following the fleet API at %s", self.settings.node_name, self.settings.api_url
        )
        link.features_probed(self.features)
        link.start()
        cache.start()

        def one_pass() -> NodeReport | None:
            self._follow_kernel(link)
            declared = self.endpoints.read()
            if declared is not None:
                link.endpoints_declared(declared)
            return self.reconcile_assignments(cache)

        try:
            while not stop.is_set():
                # Cleared before reading, so assignments arriving meanwhile wake the next round.
                wake.clear()
                report = self._guarded(one_pass)
                if report is not None:
                    link.submit(report)
                wake.wait(self.settings.poll_interval)
        finally:
            # Stopping is bounded (SIGTERM to exit within STOP_SECONDS): the last report
            # gets what the budget allows; threads still in a call are daemons.
            link.close(timeout=STOP_SECONDS * 0.5)
            cache.close(timeout=STOP_SECONDS * 0.2)
        log.info("agent stopping; everything attached stays attached")

    def _guarded(self, one_pass: Callable[[], NodeReport | None]) -> NodeReport | None:
        """Run one reconcile pass. Whatever goes wrong in it is logged and reported, and
        the loop goes on: no single input may stop the agent that keeps the rest running."""
        try:
            return one_pass()
        except Exception as error:
            log.exception("reconcile pass failed; what runs is left as it is")
            report = self.report(error=f"reconcile pass failed: {type(error).__name__}: {error}")
            with contextlib.suppress(OSError):
                files.write_atomically(
                    self.settings.status_file, report.model_dump_json(by_alias=True, indent=2)
                )
            return report

    def run(self, stop: threading.Event) -> None:
        log.info(
            "agent %s reconciling %s every %.1fs",
            self.settings.node_name,
            self.settings.desired_state,
            self.settings.poll_interval,
        )
        while not stop.is_set():
            self._guarded(lambda: self.reconcile_file(self.settings.desired_state))
            stop.wait(self.settings.poll_interval)
        log.info("agent stopping; everything attached stays attached")


def run_forever(settings: AgentSettings) -> None:
    stop = threading.Event()
    wake = threading.Event()

    def stop_now() -> None:
        stop.set()
        wake.set()

    def request_stop(_signal: int, _frame: FrameType | None) -> None:
        # Set from another thread: the handler runs on the main thread, which may hold
        # an Event's lock at that very moment (Event locks are not reentrant).
        threading.Thread(target=stop_now, name="bpfleet-stop", daemon=True).start()

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
