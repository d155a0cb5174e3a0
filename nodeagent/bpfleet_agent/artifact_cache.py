"""Artifacts downloaded from the fleet API, cached as ``<cache>/<name>/<version>/``.

What the API serves is not trusted: a download lands in an incoming directory and is
verified whole there (signature against this node's trust store, the object's digest,
the artifact's name and version) before it is moved into the cache, so the cache only
ever holds what verified when it arrived. A copy that no longer verifies (the trust
store changed, or a hand on the node) is dropped and downloaded again, at most once a
while per digest, so nothing turns into a loop.

Downloads run on a thread of their own, each within an overall deadline: the reconcile
loop asks ``ensure`` and never waits on the network; it is woken when a download ends.
What the API refused is remembered for a while, and an unreachable API is backed off
from.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bpfleet_agent.api_client import ApiClient, ArtifactPart, Backoff
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.preparing import Rejection, locate, rejected
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, failures, signing
from bpfleet_core.protocol import ProgramState
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)

# An artifact the API refused (unknown digest, bytes that do not verify) is asked for
# again this late; a cached copy is dropped for a fresh download at most this often.
REFUSED_RETRY = 60.0


def _label(ref: ArtifactRef) -> str:
    assert ref.digest is not None
    return f"{ref.name}@{ref.version} (sha256 {ref.digest[:12]}…)"


class ArtifactCache:
    """What assignments pin by digest, present and verified, or on its way."""

    def __init__(
        self,
        settings: AgentSettings,
        credential: NodeCredential,
        *,
        trust: Callable[[], signing.TrustStore],
        wake: threading.Event | None = None,
    ) -> None:
        assert settings.api_url is not None
        self.directory = settings.artifact_cache
        self.search_dirs = settings.artifact_search_dirs
        self.timeout = settings.download_timeout
        self.credential = credential
        self._trust = trust
        self._wake = wake
        self._client = ApiClient(
            settings.api_url, ca=settings.api_ca, allow_insecure_http=settings.allow_insecure_http
        )
        self._backoff = Backoff()
        self._lock = threading.Condition()
        # Guarded by the lock: when downloads may resume after a temporary failure, what
        # the API refused (ref -> until when, why), the copies dropped (digest -> when)
        # and the downloads asked for and not finished, oldest first.
        self._resume_at = 0.0
        self._refused: dict[ArtifactRef, tuple[float, Rejection]] = {}
        self._dropped: dict[str, float] = {}
        self._wanted: list[ArtifactRef] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bpfleet-downloads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the download thread (a download in flight ends at its deadline)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._client.close()

    # ------------------------------------------------------------ reconcile thread

    def ensure(self, ref: ArtifactRef) -> Rejection | None:
        """None when the copy ``preparing`` will pick for ``ref`` verifies; else why not,
        with a download asked for when one may help. Never waits on the network."""
        assert ref.digest is not None
        files = locate(ref, self.search_dirs)
        if files is not None:
            problem = self.verify(files, ref)
            if problem is None:
                return None
            ours = self.directory / ref.name / ref.version
            if files.object.parent == ours and not self._drop(ours, ref, problem):
                return problem
        return self._ask(ref)

    def verify(self, files: artifacts.ArtifactFiles, ref: ArtifactRef) -> Rejection | None:
        """None when ``files`` are the artifact ``ref`` names, vouched for by a trusted key."""
        try:
            verified = artifacts.verify(
                files, self._trust(), expected_digest=ref.digest, expected_name=ref.name
            )
        except artifacts.ArtifactRejected as error:
            return rejected(error, ref.digest)
        if verified.manifest.version != ref.version:
            return Rejection(
                ProgramState.SIGNATURE_REJECTED,
                "ArtifactVersionMismatch",
                f"the object sha256 {verified.manifest.object.sha256[:12]}… is signed as "
                f"{ref.name}@{verified.manifest.version}, not @{ref.version}",
                ref.digest,
            )
        return None

    def _drop(self, copy: Path, ref: ArtifactRef, problem: Rejection) -> bool:
        """Remove a cached copy that does not verify; False when one was dropped too
        recently, so a copy that keeps going bad is not downloaded again and again."""
        assert ref.digest is not None
        now = time.monotonic()
        with self._lock:
            if now - self._dropped.get(ref.digest, -REFUSED_RETRY) < REFUSED_RETRY:
                return False
            self._dropped[ref.digest] = now
        log.warning(
            "the cached copy of %s does not verify (%s: %s); dropped, downloading it again",
            _label(ref),
            problem.reason,
            problem.message,
        )
        shutil.rmtree(copy, ignore_errors=True)
        with contextlib.suppress(OSError):
            copy.parent.rmdir()  # the artifact's directory, once no version is left
        return True

    def _ask(self, ref: ArtifactRef) -> Rejection:
        """Queue a download unless one is on its way or asking again cannot help yet."""
        assert ref.digest is not None
        with self._lock:
            waiting = self._not_yet(ref)
            if waiting is not None:
                return waiting
            if ref not in self._wanted:
                self._wanted.append(ref)
                self._lock.notify_all()
        return Rejection(
            ProgramState.PENDING,
            "ArtifactDownloading",
            f"downloading {_label(ref)} from the fleet API",
            ref.digest,
        )

    def _not_yet(self, ref: ArtifactRef) -> Rejection | None:
        """Why not to ask now: a recent refusal, or the backoff after a failure. Lock held."""
        assert ref.digest is not None
        now = time.monotonic()
        refused_until, problem = self._refused.get(ref, (0.0, None))
        if problem is not None and now < refused_until:
            return problem
        if self._resume_at > now:
            return Rejection(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"cannot download {_label(ref)} from the fleet API yet; next try in "
                f"{self._resume_at - now:.1f}s",
                ref.digest,
            )
        return None

    # ------------------------------------------------------------ download thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._wanted:
                    self._lock.wait()
                if self._stopping:
                    return
                ref = self._wanted[0]
            try:
                self.fetch(ref)
            except Exception:
                # A bug, not the network: the next pass asks again, after the backoff.
                log.exception("unexpected error downloading %s", _label(ref))
                with self._lock:
                    self._resume_at = time.monotonic() + self._backoff.next_delay()
            finally:
                with self._lock:
                    self._wanted.remove(ref)
            if self._wake is not None:
                self._wake.set()

    def fetch(self, ref: ArtifactRef) -> Rejection | None:
        """Download ``ref`` now, verify it whole and move it into the cache; None once it
        is there. On the download thread (or a test's)."""
        assert ref.digest is not None
        label = _label(ref)
        with self._lock:
            waiting = self._not_yet(ref)
        if waiting is not None:
            return waiting
        token = self.credential.current()
        if token is None:
            return Rejection(
                ProgramState.PENDING,
                "ArtifactDownloadRetrying",
                f"not registered with the fleet API yet; {label} will be downloaded then",
                ref.digest,
            )
        incoming = self.directory / f".incoming-{uuid.uuid4().hex}"
        deadline = time.monotonic() + self.timeout
        try:
            incoming.mkdir(parents=True)
            files = artifacts.ArtifactFiles.in_directory(incoming, ref.name)
            parts: tuple[tuple[ArtifactPart, Path], ...] = (
                ("object", files.object),
                ("manifest", files.manifest),
                ("signature", files.signature),
            )
            for part, destination in parts:
                self._client.download(token, ref.digest, part, destination, deadline=deadline)
            problem = self.verify(files, ref)
            if problem is not None:
                log.error(
                    "the fleet API served %s, which does not verify (%s: %s)",
                    label,
                    problem.reason,
                    problem.message,
                )
                return self._refuse(
                    ref,
                    Rejection(
                        problem.state,
                        problem.reason,
                        f"downloaded {label}, not used: {problem.message}",
                        ref.digest,
                    ),
                )
            _move_into_place(incoming, self.directory / ref.name / ref.version)
        except failures.Failure as error:
            late = time.monotonic() >= deadline
            return self._download_failed(token, ref, error, late=late)
        except OSError as error:
            log.error("cannot cache %s in %s: %s", label, self.directory, error)
            return Rejection(
                ProgramState.LOAD_FAILED,
                "ArtifactCacheError",
                f"cannot store {label} in {self.directory}: {error}",
                ref.digest,
            )
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self.credential.confirmed()
        with self._lock:
            self._backoff.reset()
            self._refused.pop(ref, None)
        log.info("downloaded and verified %s into %s", label, self.directory)
        return None

    def _refuse(self, ref: ArtifactRef, problem: Rejection) -> Rejection:
        """Remember an answer that asking again at once would not change."""
        with self._lock:
            self._refused[ref] = (time.monotonic() + REFUSED_RETRY, problem)
        return problem

    def _download_failed(
        self, token: str, ref: ArtifactRef, error: failures.Failure, *, late: bool
    ) -> Rejection:
        assert ref.digest is not None
        label = _label(ref)
        what = (
            f"downloading {label} did not finish within {self.timeout:g}s"
            if late
            else f"downloading {label} failed ({error})"
        )
        if isinstance(error, failures.NotFound):
            log.error("the fleet API has no artifact %s: %s", label, error)
            return self._refuse(
                ref,
                Rejection(
                    ProgramState.LOAD_FAILED,
                    artifacts.RejectionReason.NOT_FOUND.value,
                    f"the fleet API has no artifact {label}",
                    ref.digest,
                ),
            )
        if isinstance(error, failures.PermanentFailure) and not isinstance(
            error, failures.Unauthorized
        ):
            log.error("downloading %s failed for good: %s", label, error)
            return self._refuse(
                ref,
                Rejection(
                    ProgramState.LOAD_FAILED,
                    "ArtifactDownloadFailed",
                    f"downloading {label} failed: {error}",
                    ref.digest,
                ),
            )
        if isinstance(error, failures.Unauthorized):
            self.credential.rejected(token)
        with self._lock:
            delay = self._backoff.next_delay()
            self._resume_at = time.monotonic() + delay
        log.warning("%s; retrying in %.1fs", what, delay)
        return Rejection(
            ProgramState.PENDING,
            "ArtifactDownloadRetrying",
            f"{what}; retrying in {delay:.1f}s",
            ref.digest,
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
