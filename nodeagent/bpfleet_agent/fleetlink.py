"""The agent's two background threads to the fleet API, for the reconcile loop.

The watcher long-polls for assignments and writes each new revision to the
assignments file before waking the reconcile loop; the reporter sends status,
heartbeats, feature reports and the node's endpoints. Neither ever raises: the
reconcile loop works from the files, so a node keeps its programs while the API is
unreachable, and across restarts.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bpfleet_agent.api_client import ApiClient, Backoff, ReceivedAssignments
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import failures, files
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import EndpointSet, Heartbeat, NodeReport, Registration

log = logging.getLogger(__name__)
_JITTER = random.SystemRandom()


# What the reconcile loop needs to use a document the watcher decoded instead of
# reading the file again: the file's stamp (path, mtime, size, inode) and the document.
Stamp = tuple[Path, int, int, int]
HandOver = Callable[[Stamp, dict[str, Any]], None]


def file_stamp(path: Path) -> Stamp:
    stat = path.stat()
    return (path, stat.st_mtime_ns, stat.st_size, stat.st_ino)


def save_assignments(path: Path, received: ReceivedAssignments) -> Stamp:
    """Store the assignments as received (re-encoded only when there are no bytes)."""
    files.write_atomically(path, received.raw or json.dumps(received.document).encode())
    return file_stamp(path)


def cached_revision(path: Path) -> int:
    """The revision of the stored assignments; 0 (ask for everything) when unreadable."""
    try:
        return ReceivedAssignments.from_document(json.loads(path.read_bytes())).revision
    except (OSError, ValueError, RecursionError):
        return 0


def _counters_fingerprint(report: NodeReport) -> str:
    """What the fingerprint leaves out of a policy report: its counters."""
    if report.policy is None:
        return ""
    return report.policy.model_dump_json(include={"allowed", "denied", "audit_denied", "counters"})


SentReport = tuple[str, str, float]  # fingerprint, counters' fingerprint, monotonic time


def report_due(last: SentReport | None, this: SentReport, settings: AgentSettings) -> bool:
    """Whether ``this`` report goes to the API: a changed one at once, one whose counters
    moved once ``counters_refresh_interval`` has passed since the last, an unchanged one
    every ``status_refresh_interval``."""
    if last is None or last[0] != this[0]:
        return True
    age = this[2] - last[2]
    if age >= settings.status_refresh_interval:
        return True
    return this[1] != last[1] and age >= settings.counters_refresh_interval


def _report_fingerprint(report: NodeReport) -> str:
    """A report without what changes on every reconcile (times, run counters), so an
    unchanged node is not re-reported every few seconds."""
    return report.model_dump_json(
        exclude={
            "reported_at": True,
            "programs": {"__all__": {"updated_at": True, "stats": True, "maps": True}},
            "policy": {
                "updated_at": True,
                "allowed": True,
                "denied": True,
                "audit_denied": True,
                "counters": True,
            },
        }
    )


class FleetLink:
    """The agent's connection to the fleet API, for the reconcile loop in ``daemon``.

    Threads: the watcher (long-poll -> assignments file -> ``wake``) and the reporter
    (status, heartbeats, features, endpoints). The reconcile loop calls ``submit``,
    ``features_probed`` and ``endpoints_declared``; artifact downloads share only the
    ``credential`` (``artifact_cache``).
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        features: Callable[[], FeatureReport],
        wake: threading.Event,
        hand_over: HandOver | None = None,
        delivered: Callable[[NodeReport], None] | None = None,
    ) -> None:
        """``hand_over`` gets each stored assignments document (before ``wake``), so
        the loop need not read and decode the file again; ``delivered`` each report
        the API took."""
        assert settings.api_url is not None
        self.settings = settings
        self.api_url = settings.api_url
        self._features = features
        self._wake = wake
        self._hand_over = hand_over
        self._delivered = delivered
        self._stop = threading.Event()
        self._report_ready = threading.Event()
        self._lock = threading.Lock()
        self._pending_report: NodeReport | None = None
        self._pending_features: FeatureReport | None = None
        # The endpoints the loop declared last, and whether the API has them yet.
        self._declared: EndpointSet | None = None
        self._declared_pending = False
        self._applied_revision = 0
        # Watcher thread only: the revision to resume after, and registrations seen.
        self._after = 0
        self._registrations_seen = 0
        # Reporter thread only: when the next heartbeat is due (the API sets the interval
        # as its fleet grows), and what was last sent.
        self._next_heartbeat = 0.0
        self.heartbeat_interval = settings.heartbeat_interval
        # What was last sent: the report's fingerprint, its counters', and when.
        self._last_sent: SentReport | None = None
        self._declared_registrations = 0
        self.credential = NodeCredential(
            settings.credential_file,
            node=settings.node_name,
            api_url=settings.api_url,
            bootstrap_token=(
                settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
            ),
            registration=self._registration,
            on_registered=self._registered,
        )
        self._watcher = threading.Thread(
            target=self._watch, name="bpfleet-assignments", daemon=True
        )
        self._reporter = threading.Thread(target=self._report, name="bpfleet-reporter", daemon=True)

    def _client(self) -> ApiClient:
        return ApiClient(
            self.api_url,
            ca=self.settings.api_ca,
            allow_insecure_http=self.settings.allow_insecure_http,
        )

    def _registration(self) -> Registration:
        return Registration(
            node=self.settings.node_name, labels=self.settings.labels, features=self._features()
        )

    def _registered(self, registration: Registration) -> None:
        # The registration carried the feature report: the API has it now.
        self._mark_features_reported(registration.features)

    # ------------------------------------------------------------ for the reconcile loop

    def start(self) -> None:
        self._watcher.start()
        self._reporter.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the threads; the reporter sends the last report first if it can, within
        ``timeout`` (a daemon thread, it does not hold the process past that).

        The watcher is not waited for: it may sit in a long-poll for minutes, has
        nothing to finish, and writes nothing once stopped (a daemon thread too)."""
        self._stop.set()
        self._report_ready.set()
        if self._reporter.is_alive():
            self._reporter.join(timeout)

    def submit(self, report: NodeReport) -> None:
        """Hand over the report of a reconcile; only the latest unsent one matters."""
        with self._lock:
            self._pending_report = report
            self._applied_revision = report.revision
        self._report_ready.set()

    def endpoints_declared(self, declared: EndpointSet) -> None:
        """Send this node's endpoints (again after a new registration: the API may be
        one that never heard of this node)."""
        with self._lock:
            if declared == self._declared and not self._declared_pending:
                return
            self._declared, self._declared_pending = declared, True
        self._report_ready.set()

    def features_probed(self, report: FeatureReport) -> None:
        """Send this feature report unless the API already acknowledged it."""
        if self._reported_probe_time() == report.probed_at.isoformat():
            return
        with self._lock:
            self._pending_features = report
        self._report_ready.set()

    # ------------------------------------------------------------ shared by both threads

    def _after_failure(
        self, what: str, error: failures.Failure, backoff: Backoff, token: str | None
    ) -> float:
        """Log a failed call and return how long to wait before the next try."""
        if (
            isinstance(error, failures.Unauthorized)
            and token is not None
            and self.credential.rejected(token)
        ):
            return 0.0  # register at once, with the bootstrap token
        if error.temporary:
            delay = backoff.next_delay()
            # The first failure of an outage is news; its repetitions are not.
            level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
            log.log(
                level,
                "%s: fleet API unavailable (%s); retrying in %.1fs, meanwhile reconciling "
                "the cached assignments",
                what,
                error,
                delay,
            )
            return delay
        # Permanent: the same call would fail again at once, so wait the longest delay.
        backoff.failures += 1
        hint = (
            " (is BPFLEET_AGENT_API_URL the API's base URL?)"
            if isinstance(error, failures.NotFound)
            else ""
        )
        log.error(
            "%s failed (%s): %s%s; next try in %.0fs",
            what,
            type(error).__name__,
            error,
            hint,
            backoff.cap,
        )
        return backoff.cap

    def _recovered(self, what: str, backoff: Backoff) -> None:
        self.credential.confirmed()
        if backoff.failures:
            log.info("%s: fleet API answering again after %d failed tries", what, backoff.failures)
        backoff.reset()

    # ------------------------------------------------------------ watcher thread

    def _watch(self) -> None:
        client = self._client()
        backoff = Backoff()
        self._after = cached_revision(self.settings.assignments_file)
        self._registrations_seen = self.credential.registrations
        try:
            while not self._stop.is_set():
                try:
                    delay = self._watch_once(client, backoff)
                except Exception:
                    # A bug, not the network; the loop goes on, and so does reconciling.
                    log.exception("unexpected error following assignments")
                    delay = backoff.cap
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            client.close()

    def _watch_once(self, client: ApiClient, backoff: Backoff) -> float:
        """One long-poll; returns how long to wait before the next."""
        token: str | None = None
        asked_at = time.monotonic()
        try:
            token = self.credential.ensure(client)
            if self.credential.registrations != self._registrations_seen:
                # A new registration may be a new node to the API (its database was
                # reset, say): ask for everything, not for what follows our revision.
                self._registrations_seen = self.credential.registrations
                self._after = 0
            # Jittered, so a fleet started at once does not renew its polls in lockstep.
            wait = self.settings.long_poll_wait * _JITTER.uniform(0.9, 1.0)
            received = client.assignments(token, after=self._after, wait=wait)
        except failures.Failure as error:
            return self._after_failure("following assignments", error, backoff, token)
        self._recovered("following assignments", backoff)
        if self._stop.is_set():
            return 0.0
        if received is None:
            # An API that answers "nothing new" at once would make this loop spin.
            return 1.0 if time.monotonic() - asked_at < 1.0 else 0.0
        if not self._accept(received, self._after):
            return backoff.cap
        self._after = received.revision
        self._wake.set()
        return 0.0

    def _accept(self, received: ReceivedAssignments, after: int) -> bool:
        if received.node != self.settings.node_name:
            log.error(
                "the fleet API sent assignments for node %r to node %r; ignored",
                received.node,
                self.settings.node_name,
            )
            return False
        if received.revision == after and after != 0:
            log.warning("ignoring assignments revision %d, already applied", received.revision)
            return False
        if received.revision < after:
            # The API answers below our revision only when its own counter is lower: its
            # database was restored. What it sends now is the whole desired state.
            log.warning(
                "the fleet API's revision went back from %d to %d (a restored database?); "
                "taking its assignments as they are",
                after,
                received.revision,
            )
        try:
            stamp = save_assignments(self.settings.assignments_file, received)
        except OSError as error:
            log.error("cannot store assignments in %s: %s", self.settings.assignments_file, error)
            return False
        if self._hand_over is not None:
            self._hand_over(stamp, received.document)
        log.info("assignments revision %d received", received.revision)
        return True

    # ------------------------------------------------------------ reporter thread

    def _report(self) -> None:
        client = self._client()
        backoff = Backoff()
        try:
            while True:
                stopping = self._stop.is_set()
                # Cleared before the round, so a report submitted during it is not missed.
                self._report_ready.clear()
                try:
                    delay = self._report_round(client, backoff, stopping)
                except Exception:
                    # A bug, not the network; the loop goes on, and so does reconciling.
                    log.exception("unexpected error reporting to the fleet API")
                    delay = backoff.cap
                if stopping:
                    return
                if delay is not None:
                    self._stop.wait(delay)
                    continue
                self._report_ready.wait(max(0.0, self._next_heartbeat - time.monotonic()))
        finally:
            client.close()

    def _report_round(self, client: ApiClient, backoff: Backoff, stopping: bool) -> float | None:
        """Send what is due; after a failure, how long to wait before trying again."""
        token: str | None = None
        try:
            token = self.credential.ensure(client)
            self._send_features(client, token)
            self._send_endpoints(client, token)
            self._send_report(client, token)
            if not stopping and time.monotonic() >= self._next_heartbeat:
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
                with self._lock:
                    revision = self._applied_revision
                asked = client.heartbeat(token, Heartbeat(revision=revision))
                if asked is not None and asked != self.heartbeat_interval:
                    log.info("heartbeat interval %.0fs, as the fleet API asks", asked)
                    self._next_heartbeat += asked - self.heartbeat_interval
                    self.heartbeat_interval = asked
        except failures.Failure as error:
            if stopping:
                log.warning("the last report did not reach the fleet API: %s", error)
                return None
            return self._after_failure("reporting", error, backoff, token)
        self._recovered("reporting", backoff)
        return None

    def _send_features(self, client: ApiClient, token: str) -> None:
        with self._lock:
            report = self._pending_features
        if report is None:
            return
        try:
            client.report_features(token, report)
        except failures.Failure as error:
            if not error.temporary and not isinstance(error, failures.Unauthorized):
                # Sending the same report again cannot help; the next probe is tried afresh.
                log.error("the fleet API refuses the feature report; dropped")
                with self._lock:
                    if self._pending_features is report:
                        self._pending_features = None
            raise
        self._mark_features_reported(report)
        log.info("feature report for kernel %s sent to the fleet API", report.kernel_release)

    def _send_endpoints(self, client: ApiClient, token: str) -> None:
        with self._lock:
            if self.credential.registrations != self._declared_registrations:
                self._declared_registrations = self.credential.registrations
                self._declared_pending = self._declared is not None
            declared, pending = self._declared, self._declared_pending
        if declared is None or not pending:
            return
        try:
            client.declare_endpoints(token, declared)
        except failures.Failure as error:
            # 409: another node still holds an endpoint or its IP (it moved here, and
            # that node has not said so yet): worth asking again. Other refusals are not.
            if not (
                error.temporary or isinstance(error, failures.Unauthorized | failures.Conflict)
            ):
                log.error("the fleet API refuses this node's endpoints; dropped: %s", error)
                self._endpoints_sent(declared)
            raise
        self._endpoints_sent(declared)
        log.info("%d endpoint(s) declared to the fleet API", len(declared.endpoints))

    def _endpoints_sent(self, declared: EndpointSet) -> None:
        with self._lock:
            if self._declared is declared:
                self._declared_pending = False

    def _send_report(self, client: ApiClient, token: str) -> None:
        with self._lock:
            report = self._pending_report
        if report is None:
            return
        fingerprint, counters = _report_fingerprint(report), _counters_fingerprint(report)
        now = time.monotonic()
        if not report_due(self._last_sent, (fingerprint, counters, now), self.settings):
            return
        try:
            client.report_status(token, report)
        except failures.Failure as error:
            if not error.temporary and not isinstance(error, failures.Unauthorized):
                log.error(
                    "the fleet API refuses the status report of revision %d; dropped",
                    report.revision,
                )
                self._forget_report(report)
            raise
        self._last_sent = (fingerprint, counters, now)
        self._forget_report(report)
        if self._delivered is not None:
            self._delivered(report)
        log.debug("status of revision %d sent", report.revision)

    def _forget_report(self, report: NodeReport) -> None:
        with self._lock:
            if self._pending_report is report:
                self._pending_report = None

    # ------------------------------------------------------------ features bookkeeping

    def _reported_probe_time(self) -> str | None:
        try:
            return self.settings.features_reported_file.read_text().strip()
        except OSError:
            return None

    def _mark_features_reported(self, report: FeatureReport) -> None:
        with self._lock:
            if self._pending_features is not None and (
                self._pending_features.probed_at == report.probed_at
            ):
                self._pending_features = None
        try:
            files.write_atomically(
                self.settings.features_reported_file, report.probed_at.isoformat()
            )
        except OSError as error:
            log.warning("cannot record the reported features: %s", error)
