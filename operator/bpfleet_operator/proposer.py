"""Proposal work for a running operator, in a cluster or standalone: find the source a
proposal is for (its spec and credentials, which the runner supplies), carry it out in
a clone of the source's repository kept for proposals (``proposing``), open the pull
request on the source's forge (``forges``), and report each stage to the fleet API.
After each GitSource pass, ``track`` follows the source's pushed proposals into the
tracked branch and the fleet.

The clone for proposals is not the one the source's passes fetch into, so writing a
proposal never races a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bpfleet_core import failures
from bpfleet_core.proposals import ProposalReport, ProposalWork, PullRequest, SourceKey
from bpfleet_core.resources import GitSourceSpec
from bpfleet_operator import forges, git, gitsource, proposing
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """What the runner knows of a source: its spec and what it may send where."""

    spec: GitSourceSpec
    credentials: git.Credentials
    forge_token: str | None = None  # for spec.proposals.forge, bound to its API host
    forge_ca: str | None = None  # PEM certificates the forge's https is checked against


# source -> Access, or None when this operator does not follow that source; raises
# ``failures.Failure`` when its Secret cannot be read.
Lookup = Callable[[SourceKey], Access | None]


def setup(settings: OperatorSettings) -> proposing.Setup:
    key = settings.signing_key.read_text() if settings.signing_key is not None else None
    return proposing.Setup(
        branch_prefix=settings.proposal_branch_prefix,
        committer=git.Identity(settings.committer_name, settings.committer_email),
        author_domain=settings.author_email_domain,
        signing_key=key,
    )


def _opener(access: Access) -> proposing.OpenPullRequest | None:
    forge = access.spec.proposals.forge
    if forge is None:
        return None
    token = access.forge_token

    def open_pull_request(head: str, base: str, title: str, body: str) -> PullRequest:
        if token is None:
            raise proposing.NotOpened("no token for the forge (its secretRef has none)")
        try:
            return forges.open_pull_request(
                forge, token, forges.Change(head, base, title, body), ca=access.forge_ca
            )
        except forges.ForgeError as error:
            raise proposing.NotOpened(str(error)) from None

    return open_pull_request


class Proposer:
    """Carries out proposal work and tracks pushed proposals, for one operator."""

    def __init__(
        self,
        settings: OperatorSettings,
        api: FleetApi,
        lookup: Lookup,
        wake: Callable[[SourceKey], None],
        *,
        standalone: bool,
    ) -> None:
        self.settings = settings
        self.api = api
        self.lookup = lookup
        self.wake = wake
        self.setup = setup(settings)
        self.allow_local = settings.allows_local_sources(standalone=standalone)
        self._reported: dict[int, str] = {}

    def workspace(self, source: SourceKey, access: Access) -> git.Checkout:
        directory: Path = self.settings.state_dir / "proposals" / source.namespace / source.name
        return git.Checkout(
            access.spec.url,
            directory,
            access.credentials,
            allow_local=self.allow_local,
            state_dir=self.settings.state_dir,
        )

    def handle(self, work: ProposalWork) -> bool:
        """Do one item of work and report it; False when it should be tried again."""
        try:
            access = self.lookup(work.source)
        except failures.Failure as error:
            if work.action == "merge":
                refused = ProposalReport(state="Pushed", message=f"not merged: {error}")
                return self._report(work, refused)
            return self._report(work, ProposalReport(state="Failed", message=str(error)))
        if access is None:
            return True  # another operator's source
        workspace = self.workspace(work.source, access)
        try:
            if work.action == "merge":
                report = proposing.merge(work, access.spec, workspace, self.setup)
            else:
                report = proposing.push(work, access.spec, workspace, self.setup, _opener(access))
        except proposing.Retry as error:
            log.warning("proposal %d: %s; trying again later", work.id, error)
            self._report(work, ProposalReport(state="Proposed", message=f"retrying: {error}"))
            return False
        except git.GitError as error:  # a Git failure the steps did not expect
            log.warning("proposal %d: %s; trying again later", work.id, error)
            return False
        log.info("proposal %d (%s): %s %s", work.id, work.action, report.state, report.message)
        done = self._report(work, report)
        if done and report.state == "Merged":
            self.wake(work.source)  # the source's next pass applies the merge at once
        return done

    def _report(self, work: ProposalWork, report: ProposalReport) -> bool:
        if report.state == "Proposed" and self._reported.get(work.id) == report.message:
            return True  # said already
        try:
            self.api.report_proposal(work.id, report)
        except failures.TemporaryFailure as error:
            log.warning("proposal %d: not reported: %s", work.id, error.message)
            return False
        except failures.PermanentFailure as error:  # gone, or already further along
            log.warning("proposal %d: report refused: %s", work.id, error.message)
            if report.state != "Failed" and error.status == 422 and work.action == "push":
                # The card must not stay Proposed for ever: say what could not be said.
                refused = f"the fleet API refused the operator's report: {error.message}"
                return self._report(work, ProposalReport(state="Failed", message=refused[:4000]))
        self._reported[work.id] = report.message
        return True

    def track(self, source: SourceKey, checkout: git.Checkout, result: gitsource.Result) -> None:
        """After a pass: the source's pushed proposals merged, applied or rejected
        since (best effort: a failure waits for the next pass)."""
        if result.outcome in ("Failed", "Suspended"):
            return
        try:
            cards = self.api.open_proposals(source.namespace, source.name)
        except failures.Failure as error:
            log.warning("proposals of %s: not tracked: %s", source, error.message)
            return
        tracked = [
            proposing.Tracked(
                id=int(card["id"]),
                state=str(card["state"]),
                commit=card.get("commit"),
                merged_commit=card.get("mergedCommit"),
                revision=card.get("revision"),
            )
            for card in cards
        ]
        try:
            changes = proposing.track(
                tracked, result.status, result.outcome == "Rejected", checkout
            )
        except git.GitError as error:
            log.warning("proposals of %s: not tracked: %s", source, error)
            return
        for proposal, report in changes:
            log.info("proposal %d: %s %s", proposal, report.state, report.revision or "")
            try:
                self.api.report_proposal(proposal, report)
            except failures.Failure as error:
                log.warning("proposal %d: not reported: %s", proposal, error.message)


def read_secret(directory: Path | None, name: str) -> dict[str, str]:
    """Standalone: a Secret as a directory of files, one per key (what Kubernetes
    mounts); ``PermanentFailure`` when it is missing."""
    if directory is None:
        raise failures.PermanentFailure(
            f"secretRef {name}: standalone reads Secrets from BPFLEET_OPERATOR_SECRETS_DIR, "
            "which is not set"
        )
    folder = directory / name
    if not folder.is_dir():
        raise failures.PermanentFailure(f"secretRef {name}: no directory {folder}")
    return {
        item.name: item.read_text()
        for item in sorted(folder.iterdir())
        if item.is_file() and not item.name.startswith(".")
    }


def credentials_from(data: dict[str, str]) -> git.Credentials:
    return git.Credentials(
        username=data.get("username"),
        password=data.get("password"),
        identity=data.get("identity"),
        known_hosts=data.get("known_hosts"),
        ca=data.get("ca.crt"),
    )


def forge_token(data: dict[str, str]) -> str | None:
    token = data.get("token") or data.get("password")
    return token.strip() if token else None
