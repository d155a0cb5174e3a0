"""Artifacts downloaded from the fleet API, cached as ``<cache>/<name>/<version>/``.

Downloads run on the reconcile thread, on a client of their own; they share only the
node credential with ``fleetlink``'s threads. What the API refused is remembered for a
while, and an unreachable API is backed off from, so a reconcile pass never waits on
the same failure twice in a row.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path

from bpfleet_agent.api_client import ApiClient, ArtifactPart, Backoff
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.preparing import Rejection
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, failures
from bpfleet_core.protocol import ProgramState
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)

# An artifact the API refused (unknown digest, wrong bytes) is asked for again this late.
REFUSED_RETRY = 60.0


class ArtifactCache:
    """Fetches what assignments pin by digest; for the reconcile loop only."""

    def __init__(self, settings: AgentSettings, credential: NodeCredential) -> None:
        assert settings.api_url is not None
        self.directory = settings.artifact_cache
        self.credential = credential
        self._client = ApiClient(settings.api_url, ca=settings.api_ca)
        self._backoff = Backoff()
        self._resume_at = 0.0
        self._refused: dict[str, tuple[float, Rejection]] = {}

    def close(self) -> None:
        self._client.close()

    def fetch(self, ref: ArtifactRef) -> Rejection | None:
        """Download the artifact ``ref`` pins by digest into the cache, as
        ``<cache>/<name>/<version>/``; None once it is there. Only the object's digest is
        checked here: signatures are the loader's to verify, never the API's word."""
        assert ref.digest is not None
        label = f"{ref.name}@{ref.version} (sha256 {ref.digest[:12]}…)"
        refused_until, problem = self._refused.get(ref.digest, (0.0, None))
        if problem is not None and time.monotonic() < refused_until:
            return problem
        wait = self._resume_at - time.monotonic()
        if wait > 0:
            return Rejection(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"cannot download {label} from the fleet API yet; next try in {wait:.1f}s",
            )
        token = self.credential.current()
        if token is None:
            return Rejection(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"not registered with the fleet API yet; {label} will be downloaded then",
            )
        incoming = self.directory / f".incoming-{uuid.uuid4().hex}"
        try:
            incoming.mkdir(parents=True)
            files = artifacts.ArtifactFiles.in_directory(incoming, ref.name)
            parts: tuple[tuple[ArtifactPart, Path], ...] = (
                ("object", files.object),
                ("manifest", files.manifest),
                ("signature", files.signature),
            )
            for part, destination in parts:
                self._client.download(token, ref.digest, part, destination)
            actual = artifacts.sha256_file(files.object)
            if actual != ref.digest:
                log.error("the fleet API served %s with sha256 %s; discarded", label, actual)
                return self._refuse(
                    ref.digest,
                    Rejection(
                        ProgramState.SIGNATURE_REJECTED,
                        artifacts.RejectionReason.DIGEST_MISMATCH.value,
                        f"the fleet API served an object with sha256 {actual[:12]}… for "
                        f"{label}; not used",
                    ),
                )
            _move_into_place(incoming, self.directory / ref.name / ref.version)
        except failures.Failure as error:
            return self._download_failed(token, ref.digest, label, error)
        except OSError as error:
            log.error("cannot cache %s in %s: %s", label, self.directory, error)
            return Rejection(
                ProgramState.LOAD_FAILED,
                "ArtifactCacheError",
                f"cannot store {label} in {self.directory}: {error}",
            )
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self.credential.confirmed()
        self._backoff.reset()
        self._refused.pop(ref.digest, None)
        log.info("downloaded %s into %s", label, self.directory)
        return None

    def _refuse(self, digest: str, problem: Rejection) -> Rejection:
        """Remember an answer that asking again at once would not change."""
        self._refused[digest] = (time.monotonic() + REFUSED_RETRY, problem)
        return problem

    def _download_failed(
        self, token: str, digest: str, label: str, error: failures.Failure
    ) -> Rejection:
        if isinstance(error, failures.NotFound):
            log.error("the fleet API has no artifact %s: %s", label, error)
            return self._refuse(
                digest,
                Rejection(
                    ProgramState.LOAD_FAILED,
                    artifacts.RejectionReason.NOT_FOUND.value,
                    f"the fleet API has no artifact {label}",
                ),
            )
        if isinstance(error, failures.PermanentFailure) and not isinstance(
            error, failures.Unauthorized
        ):
            log.error("downloading %s failed for good: %s", label, error)
            return self._refuse(
                digest,
                Rejection(
                    ProgramState.LOAD_FAILED,
                    "ArtifactDownloadFailed",
                    f"downloading {label} failed: {error}",
                ),
            )
        if isinstance(error, failures.Unauthorized):
            self.credential.rejected(token)
        delay = self._backoff.next_delay()
        self._resume_at = time.monotonic() + delay
        log.warning("downloading %s failed (%s); retrying in %.1fs", label, error, delay)
        return Rejection(
            ProgramState.PENDING,
            "ArtifactDownloadRetrying",
            f"downloading {label} failed ({error}); retrying",
        )


def _move_into_place(incoming: Path, directory: Path) -> None:
    """Swap a complete download in for ``directory``, so a reader (or a crash) never
    meets half of one artifact and half of another."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    stale = directory.with_name(f".stale-{directory.name}-{uuid.uuid4().hex}")
    if directory.exists():
        directory.rename(stale)
    incoming.rename(directory)
    shutil.rmtree(stale, ignore_errors=True)
