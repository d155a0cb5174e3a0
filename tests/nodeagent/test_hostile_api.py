"""A fleet API (or whoever stands in its place) that lies, trickles or is not who it says.

The agent is root on every node, so what the API serves is input like any other: a
download is verified whole before the cache keeps it, a bad cached copy is fetched
again (once in a while, not in a loop), a slow download never holds the reconcile
loop, and the API is reached over TLS unless development says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bpfleet_agent.api_client import ApiClient
from bpfleet_agent.artifact_cache import ArtifactCache
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.daemon import Agent
from bpfleet_agent.preparing import Rejection, locate
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import artifacts, failures, files, signing
from bpfleet_core.protocol import Heartbeat, ProgramState, Registration
from bpfleet_core.resources import ArtifactRef
from tests.certificates import certificate_authority, server_certificate, write_certificate
from tests.conftest import SignedCatalog
from tests.nodeagent.conftest import AgentEnv
from tests.nodeagent.hostile import HostileApi, hostile_api
from tests.polling import wait_for

NODE = "node-1"


def _settings(api: HostileApi, state: Path, catalog: SignedCatalog, **extra: Any) -> AgentSettings:
    return AgentSettings(
        node_name=NODE,
        state_dir=state,
        api_url=api.url,
        allow_insecure_http=True,
        artifact_dirs=[],
        trust=[catalog.trust],
        **extra,
    )


def _registered(settings: AgentSettings) -> NodeCredential:
    """A credential as an earlier run stored it; these APIs take any token."""
    assert settings.api_url is not None
    files.write_atomically(
        settings.credential_file,
        json.dumps({"node": NODE, "apiUrl": settings.api_url, "token": "t"}),
        mode=0o600,
    )

    def no_registration() -> Registration:
        raise AssertionError("registered already")

    return NodeCredential(
        settings.credential_file,
        node=NODE,
        api_url=settings.api_url,
        bootstrap_token=None,
        registration=no_registration,
    )


@contextlib.contextmanager
def _cache(
    settings: AgentSettings, *, wake: threading.Event | None = None
) -> Iterator[ArtifactCache]:
    trust = signing.TrustStore.from_paths(settings.trust)
    cache = ArtifactCache(settings, _registered(settings), trust=lambda: trust, wake=wake)
    cache.start()
    try:
        yield cache
    finally:
        cache.close()


def _copy(source: artifacts.ArtifactFiles, directory: Path, name: str) -> artifacts.ArtifactFiles:
    copied = artifacts.ArtifactFiles.in_directory(directory, name)
    directory.mkdir(parents=True, exist_ok=True)
    for part in ("object", "manifest", "signature"):
        shutil.copyfile(getattr(source, part), getattr(copied, part))
    return copied


def _spoil(files_: artifacts.ArtifactFiles, how: str, tmp_path: Path) -> None:
    match how:
        case "untrusted-signer":
            keys = tmp_path / f"keys-{uuid.uuid4().hex[:8]}"
            key = keys / "other.key"
            signing.generate_key_pair(key, keys / "other.pub")
            files_.signature.write_bytes(
                signing.sign(files_.manifest.read_bytes(), signing.load_private_key(key))
            )
        case "nested-manifest":
            files_.manifest.write_bytes(b"[" * 200_000 + b"]" * 200_000)
        case "no-signature":
            files_.signature.write_bytes(b"")
        case _:
            raise AssertionError(how)


def _ref(catalog: SignedCatalog, name: str = "xdp_counter") -> ArtifactRef:
    digest = artifacts.sha256_file(catalog.files(name).object)
    return ArtifactRef(name=name, version=catalog.versions[name], digest=digest)


def _cached_names(settings: AgentSettings) -> list[str]:
    cache = settings.artifact_cache
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ----------------------------------------------------------------------------- #13


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("untrusted-signer", "BadSignature"),
        ("nested-manifest", "BadSignature"),
        ("no-signature", "Unsigned"),
    ],
)
def test_a_download_is_verified_whole_before_the_cache_keeps_it(
    signed_catalog: SignedCatalog, tmp_path: Path, how: str, reason: str
) -> None:
    ref = _ref(signed_catalog)
    served = _copy(signed_catalog.files("xdp_counter"), tmp_path / "served", "xdp_counter")
    _spoil(served, how, tmp_path)
    with hostile_api() as api:
        api.serve_artifact(str(ref.digest), served)
        settings = _settings(api, tmp_path / "state", signed_catalog)
        with _cache(settings) as cache:
            rejection = cache.fetch(ref)
    assert rejection is not None
    assert (rejection.state, rejection.reason) == (ProgramState.SIGNATURE_REJECTED, reason)
    assert _cached_names(settings) == [], "nothing unverified is kept, not even for a while"


def test_a_download_signed_for_another_artifact_or_version_is_refused(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    tc = _ref(signed_catalog, "tc_counter")
    posing = ArtifactRef(name="xdp_counter", version="1.0.0", digest=tc.digest)
    older = ArtifactRef(name="tc_counter", version="0.9.0", digest=tc.digest)
    with hostile_api() as api:
        api.serve_artifact(str(tc.digest), signed_catalog.files("tc_counter"))
        settings = _settings(api, tmp_path / "state", signed_catalog)
        with _cache(settings) as cache:
            renamed, downgraded = cache.fetch(posing), cache.fetch(older)
    assert renamed is not None
    assert renamed.reason == "ArtifactNameMismatch"
    assert downgraded is not None
    assert downgraded.state == ProgramState.SIGNATURE_REJECTED
    assert "1.0.0" in downgraded.message
    assert "0.9.0" in downgraded.message
    assert _cached_names(settings) == []


def _seed_cache(
    settings: AgentSettings, catalog: SignedCatalog, how: str, tmp_path: Path, name: str
) -> None:
    """A bad copy in the cache, as an older agent (or a hand on the node) left it."""
    cached = _copy(
        catalog.files(name), settings.artifact_cache / name / catalog.versions[name], name
    )
    _spoil(cached, how, tmp_path)


@pytest.mark.parametrize("how", ["untrusted-signer", "nested-manifest"])
def test_a_bad_cached_copy_is_dropped_and_downloaded_again(
    signed_catalog: SignedCatalog, tmp_path: Path, how: str
) -> None:
    ref = _ref(signed_catalog)
    with hostile_api() as api:
        api.serve_artifact(str(ref.digest), signed_catalog.files("xdp_counter"))
        settings = _settings(api, tmp_path / "state", signed_catalog)
        _seed_cache(settings, signed_catalog, how, tmp_path, "xdp_counter")
        with _cache(settings) as cache:
            first = cache.ensure(ref)
            assert first is not None
            assert first.state == ProgramState.PENDING
            wait_for(lambda: cache.ensure(ref) is None, 30, "the fresh copy")
    trust = signing.TrustStore.from_paths([signed_catalog.trust])
    cached = artifacts.ArtifactFiles.in_directory(
        settings.artifact_cache / "xdp_counter" / ref.version, "xdp_counter"
    )
    assert artifacts.verify(cached, trust, ref.digest, expected_name="xdp_counter")


def test_a_bad_copy_the_api_serves_again_is_asked_for_once_in_a_while(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    ref = _ref(signed_catalog)
    served = _copy(signed_catalog.files("xdp_counter"), tmp_path / "served", "xdp_counter")
    _spoil(served, "untrusted-signer", tmp_path)
    wake = threading.Event()
    with hostile_api() as api:
        api.serve_artifact(str(ref.digest), served)
        settings = _settings(api, tmp_path / "state", signed_catalog)
        _seed_cache(settings, signed_catalog, "untrusted-signer", tmp_path, "xdp_counter")
        with _cache(settings, wake=wake) as cache:
            cache.ensure(ref)
            assert wake.wait(30), "a finished download wakes the reconcile loop"
            outcomes = [cache.ensure(ref) for _ in range(50)]
            asked = api.asked(str(ref.digest))
    assert asked <= 3, "one download (three parts), then the refusal is remembered"
    assert all(o is not None and o.reason == "BadSignature" for o in outcomes)
    assert _cached_names(settings) == []


@pytest.mark.bpf
def test_a_nested_manifest_in_the_cache_never_ends_the_agent(
    agent_env: AgentEnv, tmp_path: Path
) -> None:
    catalog = agent_env.catalog
    ref = _ref(catalog, "execsnoop")
    with hostile_api() as api:
        api.serve_artifact(str(ref.digest), catalog.files("execsnoop"))
        settings = _settings(
            api, agent_env.state_dir, catalog, pin_root=agent_env.pin_root, poll_interval=0.3
        )
        _seed_cache(settings, catalog, "nested-manifest", tmp_path, "execsnoop")
        assignment = {
            "name": "execs",
            "spec": {
                "artifact": ref.model_dump(by_alias=True),
                "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
            },
        }
        settings.assignments_file.write_text(
            json.dumps({"node": NODE, "revision": 1, "programs": [assignment]})
        )
        agent = Agent(settings)
        with _cache(settings) as cache:

            def attached() -> bool:
                report = agent.reconcile_assignments(cache)
                assert report is not None
                return [p.state for p in report.programs] == [ProgramState.ATTACHED]

            wait_for(attached, 60, "execs attached from a fresh download")


def test_looking_an_artifact_up_survives_a_deeply_nested_manifest(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    directory = tmp_path / "artifacts"
    spoiled = _copy(signed_catalog.files("xdp_counter"), directory, "xdp_counter")
    _spoil(spoiled, "nested-manifest", tmp_path)
    ref = ArtifactRef(name="xdp_counter", version="1.0.0")
    assert locate(ref, [directory]) == spoiled, "found, for verification to refuse"


# ----------------------------------------------------------------------------- #14


def test_a_trickling_download_gives_up_at_its_deadline(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    ref = _ref(signed_catalog)
    outcome: list[Rejection | None] = []
    with hostile_api() as api:
        api.trickled.add(f"/v1/artifacts/{ref.digest}/object")
        settings = _settings(api, tmp_path / "state", signed_catalog, download_timeout=1.0)
        with _cache(settings) as cache:
            fetching = threading.Thread(target=lambda: outcome.append(cache.fetch(ref)))
            fetching.start()
            fetching.join(60)
            assert not fetching.is_alive(), "a server sending a byte at a time held the download"
    (rejection,) = outcome
    assert rejection is not None
    assert (rejection.state, rejection.reason) == (ProgramState.PENDING, "ArtifactDownloadRetrying")
    assert "did not finish within 1s" in rejection.message
    assert _cached_names(settings) == []


def test_a_slow_download_never_holds_the_reconcile_loop(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    ref = _ref(signed_catalog)
    with hostile_api() as api:
        api.trickled.add(f"/v1/artifacts/{ref.digest}/object")
        settings = _settings(api, tmp_path / "state", signed_catalog, download_timeout=600.0)
        with _cache(settings) as cache:
            answers: list[Rejection | None] = []

            def two_passes() -> None:
                answers.append(cache.ensure(ref))
                wait_for(lambda: api.asked(str(ref.digest)), 30, "the download to start")
                answers.append(cache.ensure(ref))

            passes = threading.Thread(target=two_passes)
            passes.start()
            passes.join(60)
            assert not passes.is_alive(), "the reconcile loop waited for the download"
    assert len(answers) == 2
    assert all(answer is not None and answer.state == ProgramState.PENDING for answer in answers)
    assert answers[-1] is not None
    assert "downloading" in answers[-1].message


# ----------------------------------------------------------------------------- #15


def test_plain_http_is_refused_unless_development_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="BPFLEET_AGENT_ALLOW_INSECURE_HTTP"):
        AgentSettings(node_name=NODE, api_url="http://fleet.example")
    monkeypatch.setenv("BPFLEET_AGENT_ALLOW_INSECURE_HTTP", "true")
    assert AgentSettings(node_name=NODE, api_url="http://fleet.example").allow_insecure_http
    assert AgentSettings(node_name=NODE, api_url="https://fleet.example").api_mode
    # The client holds the same line, whoever builds it.
    with pytest.raises(ValueError, match="plain http"):
        ApiClient("http://fleet.example")
    ApiClient("http://fleet.example", allow_insecure_http=True).close()


def test_https_with_the_configured_ca_works_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    ca_key, ca = certificate_authority("fleet CA")
    _, stranger = certificate_authority("another CA")
    ours = write_certificate(ca, tmp_path / "ca.pem")
    theirs = write_certificate(stranger, tmp_path / "other-ca.pem")
    with hostile_api(tls=server_certificate(ca_key, ca, tmp_path)) as api:
        assert api.url.startswith("https://")
        client = ApiClient(api.url, ca=ours)
        try:
            client.heartbeat("t", Heartbeat(revision=0))
        finally:
            client.close()
        assert api.requests == ["/v1/agent/heartbeat"]
        for ca_file in (theirs, None):
            refusing = ApiClient(api.url, ca=ca_file)
            try:
                with pytest.raises(failures.Failure, match="CERTIFICATE_VERIFY_FAILED"):
                    refusing.heartbeat("t", Heartbeat(revision=0))
            finally:
                refusing.close()
        assert api.requests == ["/v1/agent/heartbeat"], "nothing reached an unverified server"


def test_a_ca_bundle_that_cannot_be_read_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="api_ca"):
        AgentSettings(
            node_name=NODE, api_url="https://fleet.example", api_ca=tmp_path / "missing.pem"
        )
