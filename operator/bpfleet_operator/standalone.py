"""The GitOps pipeline without Kubernetes: Git -> validate all -> the fleet API.

For bare-metal fleets (and ``make up``): a ``GitSource`` document read from a file
says what to follow; each pass applies programs and policies straight to the fleet
API, and the source's status is kept in a JSON file next to its clone. Push
notifications wake it the same way as in a cluster.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from bpfleet_core import bundles, failures, files
from bpfleet_core.proposals import SourceKey
from bpfleet_core.resources import (
    BpfProgramSpec,
    GitSource,
    GitSourceStatus,
    InventoryEntry,
    SourceFile,
    parse_duration,
)
from bpfleet_operator import fleetapi, git, gitsource, proposer, statuses, webhooks
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class ApiTarget:
    """Applies documents to the fleet API; a no-op when the API already holds them.
    Failures are the fleet API client's (``bpfleet_core.failures``)."""

    def __init__(self, api: FleetApi) -> None:
        self.api = api

    def apply(self, document: gitsource.Document, revision: str, source: str) -> bool:
        if isinstance(document, bundles.ProgramDocument):
            before = self.api.get_program(document.name)
            after = self.api.put_program(document.name, document.spec)
        else:
            meta = document.policy.metadata
            before = self.api.get_policy(meta.namespace, meta.name)
            body = document.policy.model_dump(mode="json", by_alias=True, exclude_none=True)
            after = self.api.put_policy(body)
        return before is None or before["generation"] != after["generation"]

    def delete(self, entry: InventoryEntry, source: str) -> None:
        if entry.kind == "BpfProgram":
            self.api.delete_program(entry.name)
        else:
            self.api.delete_policy(entry.namespace or "default", entry.name)


def program_check(api: FleetApi) -> bundles.ProgramCheck:
    """Ask the fleet whether each program's artifact exists, is signed and fits. What it
    refuses is a problem of the manifest; a temporary failure stops the pass."""

    def check(_: str, spec: BpfProgramSpec) -> list[str]:
        try:
            return api.validate_program(spec)
        except failures.PermanentFailure as error:
            return [error.message]

    return check


class StandaloneSource:
    """One GitSource followed without a cluster."""

    def __init__(self, source: GitSource, settings: OperatorSettings, api: FleetApi) -> None:
        self.source = source
        self.api = api
        self.settings = settings
        name = source.metadata.name
        self.directory = settings.state_dir / f"gitsource-{name}"
        self.status_file = settings.state_dir / f"gitsource-{name}.status.json"
        self.checkout = self._checkout(git.Credentials())
        self.retry_seconds = settings.retry_seconds
        self.wake = threading.Event()
        self.proposer: proposer.Proposer | None = None

    def _checkout(self, credentials: git.Credentials) -> git.Checkout:
        return git.Checkout(
            self.source.spec.url,
            self.directory / "repository",
            credentials,
            allow_local=self.settings.allows_local_sources(standalone=True),
            state_dir=self.settings.state_dir,
        )

    @property
    def key(self) -> str:
        return f"{self.source.metadata.namespace or 'default'}/{self.source.metadata.name}"

    @property
    def source_key(self) -> SourceKey:
        namespace = self.source.metadata.namespace or "default"
        return SourceKey(namespace=namespace, name=self.source.metadata.name)

    def access(self) -> proposer.Access:
        """The spec, and the credentials its secretRefs name (read again each time, so
        a changed file counts); ``PermanentFailure`` when a Secret is missing."""
        spec = self.source.spec
        credentials = git.Credentials()
        data: dict[str, str] = {}
        if spec.secret_ref is not None:
            data = proposer.read_secret(self.settings.secrets_dir, spec.secret_ref.name)
            credentials = proposer.credentials_from(data)
        forge = spec.proposals.forge
        if forge is None:
            return proposer.Access(spec, credentials)
        if forge.secret_ref is not None:
            data = proposer.read_secret(self.settings.secrets_dir, forge.secret_ref.name)
        return proposer.Access(spec, credentials, proposer.forge_token(data), data.get("ca.crt"))

    def status(self) -> GitSourceStatus:
        if not self.status_file.exists():
            return GitSourceStatus()
        return GitSourceStatus.model_validate_json(self.status_file.read_text())

    def reconcile_once(self) -> gitsource.Result:
        try:
            credentials = self.access().credentials
        except failures.Failure as error:
            return self._failed(f"credentials: {error.message}")
        if credentials != self.checkout.credentials:
            self.checkout = self._checkout(credentials)
        result = gitsource.reconcile(
            self.source.spec,
            self.status(),
            self.checkout,
            ApiTarget(self.api),
            source=self.key,
            now=datetime.now(UTC),
            check_program=program_check(self.api),
        )
        files.write_atomically(
            self.status_file, result.status.model_dump_json(by_alias=True, indent=2)
        )
        self.report(result.status, result.files)
        if self.proposer is not None:
            self.proposer.track(self.source_key, self.checkout, result)
        return result

    def _failed(self, message: str) -> gitsource.Result:
        status = self.status()
        found = statuses.conditions(
            status.conditions,
            datetime.now(UTC),
            None,
            ready=("False", "SecretFailed", message),
            stalled=("SecretFailed", message),
        )
        status = status.model_copy(update={"conditions": found})
        files.write_atomically(self.status_file, status.model_dump_json(by_alias=True, indent=2))
        self.report(status)
        return gitsource.Result(status, "Failed", message)

    def report(self, status: GitSourceStatus, texts: tuple[SourceFile, ...] = ()) -> None:
        """The pass's outcome to the fleet API too, for the dashboard and the policy
        editor (best effort)."""
        namespace = self.source.metadata.namespace or "default"
        try:
            self.api.report_source(
                namespace, self.source.metadata.name, self.source.spec, status, texts
            )
        except failures.Failure as error:
            log.warning("gitsource %s: status not reported: %s", self.key, error.message)

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop``: every interval, at once when woken, sooner
        (with backoff) after a failure."""
        interval = parse_duration(self.source.spec.interval)

        def one_pass() -> tuple[bool, float]:
            result = self.reconcile_once()
            log.info("gitsource %s: %s", self.key, result.message)
            return result.outcome == "Failed", interval

        def sleep(seconds: float) -> None:
            self.wake.wait(seconds)
            self.wake.clear()

        gitsource.follow(one_pass, first_retry=self.retry_seconds, sleep=sleep, stopped=stop.is_set)


def serve(source: GitSource, settings: OperatorSettings, stop: threading.Event) -> None:
    """Run one standalone source, with its push receiver, until ``stop`` is set."""
    api = fleetapi.FleetApi.from_settings(settings)
    runner = StandaloneSource(source, settings, api)
    receiver = None
    if settings.webhook_port and settings.webhook_secret is not None:
        secret = settings.webhook_secret.get_secret_value().encode()
        namespace = source.metadata.namespace or "default"

        def secret_for(ns: str, name: str) -> bytes | None:
            return secret if (ns, name) == (namespace, source.metadata.name) else None

        receiver = webhooks.Receiver(
            settings.receiver_host(standalone=True),
            settings.webhook_port,
            secret_for,
            lambda *_: runner.wake.set(),
            connections=settings.webhook_connections,
            timeout=settings.webhook_timeout_seconds,
        ).start()
        log.info(
            "push notifications: POST %s:%d%s%s",
            receiver.host,
            receiver.port,
            webhooks.PATH_PREFIX,
            runner.key,
        )
    worker = threading.Thread(target=runner.run, args=(stop,), name="gitsource", daemon=True)
    worker.start()
    namespace = source.metadata.namespace or "default"

    def requested(ns: str, name: str) -> None:
        if (ns, name) == (namespace, source.metadata.name):
            runner.wake.set()

    follower_api = fleetapi.FleetApi.from_settings(settings)
    follower = threading.Thread(
        target=fleetapi.follow_reconcile_requests,
        args=(follower_api, requested, stop),
        name="reconcile-requests",
        daemon=True,
    )
    follower.start()
    # Proposals for this source: written to Git here, tracked after each pass.
    proposals_api = fleetapi.FleetApi(settings.api_url, settings.api_token.get_secret_value())

    def lookup(key: SourceKey) -> proposer.Access | None:
        return runner.access() if key == runner.source_key else None

    runner.proposer = proposer.Proposer(
        settings, proposals_api, lookup, lambda _: runner.wake.set(), standalone=True
    )
    writer = threading.Thread(
        target=fleetapi.follow_proposals,
        args=(proposals_api, runner.proposer.handle, stop),
        name="proposals",
        daemon=True,
    )
    writer.start()
    try:
        stop.wait()
    finally:
        runner.wake.set()
        worker.join(timeout=30)
        if receiver is not None:
            receiver.stop()
        api.close()
        follower_api.close()
        proposals_api.close()
