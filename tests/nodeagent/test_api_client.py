"""The agent's API mode: its pure pieces here; against the real fleet API below."""

from __future__ import annotations

import contextlib
import json
import logging
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from bpfleet_agent import api_client, artifact_cache, fleetlink
from bpfleet_agent.api_client import Backoff, ReceivedAssignments
from bpfleet_agent.artifact_cache import ArtifactCache
from bpfleet_agent.credential import NodeCredential
from bpfleet_agent.daemon import Agent
from bpfleet_agent.desired import parse_assignments
from bpfleet_agent.fleetlink import FleetLink, cached_revision, save_assignments
from bpfleet_agent.settings import AgentSettings, parse_pairs
from bpfleet_core import artifacts, failures, files, signing
from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import (
    Heartbeat,
    NodeReport,
    ProgramReport,
    ProgramState,
    ProgramStats,
    Registration,
)
from bpfleet_core.resources import ArtifactRef
from tests import services
from tests.api.conftest import upload
from tests.conftest import REPO, SignedCatalog
from tests.nodeagent.conftest import AgentEnv

# ----------------------------------------------------------------------------- backoff


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    ceilings = [0.5, 1, 2, 4, 8, 10, 10, 10]
    lowest = Backoff(uniform=lambda low, _high: low)
    highest = Backoff(uniform=lambda _low, high: high)
    assert [lowest.next_delay() for _ in ceilings] == [c / 2 for c in ceilings]
    assert [highest.next_delay() for _ in ceilings] == ceilings


def test_backoff_jitter_spreads_delays_and_reset_starts_over() -> None:
    backoff = Backoff()
    for _ in range(40):
        backoff.next_delay()
    delays = {backoff.next_delay() for _ in range(20)}
    assert all(5.0 <= delay <= 10.0 for delay in delays)
    assert len(delays) > 1, "jitter keeps a fleet from retrying in lockstep"
    backoff.reset()
    assert backoff.failures == 0
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_backoff_survives_very_long_outages() -> None:
    backoff = Backoff(uniform=lambda low, high: high)
    backoff.failures = 10_000
    assert backoff.next_delay() == 10.0


# ----------------------------------------------------------------------------- settings


def test_labels_parse_from_the_environment_form() -> None:
    assert parse_pairs("zone=eu-1, role=edge,,empty=") == {
        "zone": "eu-1",
        "role": "edge",
        "empty": "",
    }
    assert parse_pairs("") == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [("zone", "not key=value"), ("=a", "not key=value"), ("a=1,a=2", "given twice")],
)
def test_malformed_labels_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_pairs(text)


def test_labels_setting_reads_the_environment_and_checks_kubernetes_syntax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BPFLEET_AGENT_LABELS", "topology.kubernetes.io/zone=a,rack=r1")
    assert AgentSettings().labels == {"topology.kubernetes.io/zone": "a", "rack": "r1"}
    monkeypatch.setenv("BPFLEET_AGENT_LABELS", "zone=not valid")
    with pytest.raises(ValidationError, match="invalid label value 'not valid'"):
        AgentSettings()


def test_api_settings_and_derived_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPFLEET_AGENT_API_URL", "http://127.0.0.1:8080/")
    monkeypatch.setenv("BPFLEET_AGENT_ALLOW_INSECURE_HTTP", "true")
    monkeypatch.setenv("BPFLEET_AGENT_BOOTSTRAP_TOKEN", "boot-secret")
    settings = AgentSettings(node_name="node-1", state_dir=tmp_path, artifact_dirs=[Path("/a")])
    assert settings.api_mode
    assert settings.api_url == "http://127.0.0.1:8080"
    assert settings.bootstrap_token is not None
    assert "boot-secret" not in repr(settings), "the bootstrap token never reaches a log"
    assert settings.heartbeat_interval == 5.0
    assert settings.credential_file == tmp_path / "credential.json"
    assert settings.assignments_file == tmp_path / "assignments.json"
    assert settings.artifact_cache == tmp_path / "artifacts"
    assert settings.artifact_search_dirs == [tmp_path / "artifacts", Path("/a")]


def test_local_mode_searches_only_the_configured_artifact_dirs(tmp_path: Path) -> None:
    settings = AgentSettings(node_name="node-1", state_dir=tmp_path, artifact_dirs=[Path("/a")])
    assert not settings.api_mode
    assert settings.artifact_search_dirs == [Path("/a")]


@pytest.mark.parametrize("url", ["ftp://api", "api.example:8080"])
def test_api_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="must start with http"):
        AgentSettings(node_name="node-1", api_url=url)


def test_api_mode_needs_a_node_name_the_api_accepts() -> None:
    with pytest.raises(ValidationError, match="not a DNS name"):
        AgentSettings(node_name="Node_1", api_url="https://api")
    AgentSettings(node_name="Node_1")  # a local agent may keep any hostname


# ----------------------------------------------------------------------------- files


def test_atomic_write_sets_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "credential.json"
    files.write_atomically(path, "first", mode=0o600)
    files.write_atomically(path, b"second", mode=0o600)
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["credential.json"]


def _assignments(revision: int, *programs: object, node: str = "node-1") -> dict[str, object]:
    return {"node": node, "revision": revision, "programs": list(programs)}


XDP_ENTRY = {
    "name": "edge",
    "spec": {
        "artifact": {"name": "xdp_counter", "version": "1.0.0", "digest": "ab" * 32},
        "attach": [{"entryPoint": "xdp_count", "type": "xdp", "interfaces": ["eth0"]}],
    },
}


def test_assignments_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "assignments.json"
    assert cached_revision(path) == 0, "nothing cached: ask for everything"
    broken = {"name": "broken", "spec": {"artifact": {"name": "x"}}}
    received = ReceivedAssignments.from_document(_assignments(7, XDP_ENTRY, broken))
    save_assignments(path, received)
    assert cached_revision(path) == 7
    desired, invalid, _ = parse_assignments(path.read_text())
    assert desired.revision == 7
    assert [p.name for p in desired.programs] == ["edge"]
    assert desired.programs[0].spec.artifact.digest == "ab" * 32
    assert set(invalid) == {"broken"}, "one unreadable entry does not hide the others"


def test_an_unreadable_cache_means_start_from_revision_zero(tmp_path: Path) -> None:
    path = tmp_path / "assignments.json"
    path.write_text("{not json")
    assert cached_revision(path) == 0
    path.write_text(json.dumps({"revision": -1, "node": "n"}))
    assert cached_revision(path) == 0


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"node": "n"},
        {"node": "n", "revision": "3"},
        {"node": "n", "revision": True},
        {"revision": 3},
        {"node": "n", "revision": 3, "programs": {}},
    ],
)
def test_malformed_assignments_are_refused_whole(document: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        ReceivedAssignments.from_document(document)


def test_downloads_replace_a_cached_artifact_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "xdp_counter" / "1.0.0"
    target.mkdir(parents=True)
    (target / "xdp_counter.bpf.o").write_text("old")
    incoming = tmp_path / "cache" / ".incoming-1"
    incoming.mkdir()
    (incoming / "xdp_counter.bpf.o").write_text("new")
    artifact_cache._move_into_place(incoming, target)
    assert (target / "xdp_counter.bpf.o").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["xdp_counter"]


# ----------------------------------------------------------------------------- credential


def _credential(path: Path, bootstrap: str | None = "boot") -> NodeCredential:
    def no_registration() -> Registration:
        raise AssertionError("these tests never register")

    return NodeCredential(
        path,
        node="node-1",
        api_url="http://api",
        bootstrap_token=bootstrap,
        registration=no_registration,
    )


def test_a_stored_credential_is_used_only_for_its_node_and_api(tmp_path: Path) -> None:
    path = tmp_path / "credential.json"
    path.write_text(json.dumps({"node": "node-1", "apiUrl": "http://api", "token": "t1"}))
    assert _credential(path).current() == "t1"
    path.write_text(json.dumps({"node": "node-2", "apiUrl": "http://api", "token": "t1"}))
    assert _credential(path).current() is None
    path.write_text(json.dumps({"node": "node-1", "apiUrl": "http://other", "token": "t1"}))
    assert _credential(path).current() is None
    path.write_text("garbage")
    assert _credential(path).current() is None


def test_a_rejected_credential_is_dropped_for_re_registration(tmp_path: Path) -> None:
    path = tmp_path / "credential.json"
    stored = {"node": "node-1", "apiUrl": "http://api", "token": "t1", "nodeKey": "k1"}
    path.write_text(json.dumps(stored))
    credential = _credential(path)
    assert not credential.rejected("an-older-token"), "a stale 401 changes nothing"
    assert credential.current() == "t1"
    assert credential.rejected("t1")
    assert credential.current() is None
    # The token is gone from the file too; the node key stays: a taken name registers
    # again only with it.
    assert json.loads(path.read_text()) == {**stored, "token": None}
    assert _credential(path).current() is None


def test_without_a_bootstrap_token_a_rejected_credential_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "credential.json"
    path.write_text(json.dumps({"node": "node-1", "apiUrl": "http://api", "token": "t1"}))
    credential = _credential(path, bootstrap=None)
    with caplog.at_level(logging.ERROR):
        assert not credential.rejected("t1")
    assert credential.current() == "t1"
    assert "no bootstrap token" in caplog.text


def test_with_neither_credential_nor_bootstrap_token_the_agent_says_so(tmp_path: Path) -> None:
    credential = _credential(tmp_path / "credential.json", bootstrap=None)
    client = api_client.ApiClient("http://127.0.0.1:9", allow_insecure_http=True)
    try:
        with pytest.raises(failures.PermanentFailure, match="BOOTSTRAP_TOKEN"):
            credential.ensure(client)
    finally:
        client.close()


# ----------------------------------------------------------------------------- reports


def _report(revision: int, state: ProgramState, run_count: int, when: datetime) -> NodeReport:
    program = ProgramReport(
        name="edge",
        state=state,
        stats={"xdp_count": ProgramStats(program_id=1, run_count=run_count, run_time_ns=9)},
        updated_at=when,
    )
    return NodeReport(node="node-1", revision=revision, programs=[program], reported_at=when)


def test_only_changes_that_matter_make_a_report_new() -> None:
    first, later = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    base = fleetlink._report_fingerprint(_report(3, ProgramState.ATTACHED, 10, first))
    assert base == fleetlink._report_fingerprint(_report(3, ProgramState.ATTACHED, 99, later))
    assert base != fleetlink._report_fingerprint(_report(4, ProgramState.ATTACHED, 10, first))
    assert base != fleetlink._report_fingerprint(_report(3, ProgramState.ATTACH_FAILED, 10, first))


# ============================================================================= real API
# Everything below runs against the real fleet API under uvicorn (SQLite, Redis, a
# Celery worker for rollouts; the `fleet_api` fixture of conftest): no stand-in server.


@pytest.fixture(scope="module")
def recorded_features() -> FeatureReport:
    return FeatureReport.model_validate_json((REPO / "tests/cli/feature-report.json").read_text())


def _features_of(report: FeatureReport, node: str) -> FeatureReport:
    return report.model_copy(update={"node": node})


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _put_program(api: services.Api, name: str, artifact: dict[str, Any], group: str) -> None:
    document = {
        "artifact": {"name": artifact["name"], "version": artifact["version"]},
        "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        "nodeSelector": {"matchLabels": {"group": group}},
    }
    with api.client() as client:
        response = client.put(f"/v1/programs/{name}", json=document)
    assert response.status_code == 200, response.text


def _link_settings(api: services.Api, state_dir: Path, node: str, **extra: Any) -> AgentSettings:
    return AgentSettings(
        node_name=node,
        state_dir=state_dir,
        api_url=api.url,
        allow_insecure_http=True,  # the test API serves plain http on 127.0.0.1
        bootstrap_token=api.bootstrap_token,
        artifact_dirs=[],
        heartbeat_interval=0.5,
        **{"long_poll_wait": 10, **extra},
    )


@pytest.mark.services
def test_each_protocol_call_and_how_its_failures_are_classified(
    fleet_api: services.Api, recorded_features: FeatureReport
) -> None:
    node = _unique("client")
    features = _features_of(recorded_features, node)
    client = api_client.ApiClient(fleet_api.url, allow_insecure_http=True)
    try:
        registration = Registration(node=node, labels={"zone": "a"}, features=features)
        with pytest.raises(failures.Unauthorized):
            client.register("not-the-bootstrap-token", registration)
        token = client.register(fleet_api.bootstrap_token, registration).token

        assert client.assignments(token, after=0, wait=0.2) is None, "nothing assigned yet"
        client.heartbeat(token, Heartbeat(revision=0))
        client.report_features(token, features)
        report = NodeReport(node=node, revision=0, programs=[], reported_at=datetime.now(UTC))
        client.report_status(token, report)

        with pytest.raises(failures.Forbidden) as foreign:
            client.report_status(token, report.model_copy(update={"node": "someone-else"}))
        assert foreign.value.status == 403
        assert "belongs to node" in str(foreign.value), "the API's reason is kept"

        with pytest.raises(failures.Unauthorized):
            client.assignments("bpf_not-a-token", after=0, wait=0)

        with pytest.raises(failures.NotFound):
            client.download(
                token, "0" * 64, "object", Path("/dev/null"), deadline=time.monotonic() + 30
            )
    finally:
        client.close()

    unreachable = api_client.ApiClient(
        f"http://127.0.0.1:{services.free_port()}", allow_insecure_http=True
    )
    try:
        with pytest.raises(failures.TemporaryFailure):
            unreachable.heartbeat("token", Heartbeat(revision=0))
    finally:
        unreachable.close()


@pytest.mark.services
def test_link_registers_follows_assignments_downloads_and_reports(
    fleet_api: services.Api,
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
    tmp_path: Path,
) -> None:
    node, group = _unique("link"), _unique("g")
    settings = _link_settings(fleet_api, tmp_path, node, labels={"group": group})
    wake = threading.Event()
    link = FleetLink(settings, features=lambda: _features_of(recorded_features, node), wake=wake)
    link.start()
    try:
        _eventually(settings.credential_file.exists, "registration")
        assert stat.S_IMODE(settings.credential_file.stat().st_mode) == 0o600
        with fleet_api.client() as admin:
            registered = admin.get(f"/v1/nodes/{node}").json()
        assert registered["labels"] == {"group": group}
        assert registered["features"]["kernel_release"] == recorded_features.kernel_release

        artifact = upload(fleet_api, signed_catalog, "execsnoop")
        program = _unique("execs")
        _put_program(fleet_api, program, artifact, group)
        assert wake.wait(30), "new assignments wake the reconcile loop"
        stored = json.loads(settings.assignments_file.read_text())
        assert stored["node"] == node
        (assignment,) = stored["programs"]
        assert assignment["name"] == program
        ref = ArtifactRef.model_validate(assignment["spec"]["artifact"])
        assert ref.digest == artifact["digest"]

        trust = signing.TrustStore.from_paths([signed_catalog.trust])
        cache = ArtifactCache(settings, link.credential, trust=lambda: trust)
        try:
            assert cache.fetch(ref) is None
        finally:
            cache.close()
        cached = artifacts.ArtifactFiles.in_directory(
            settings.artifact_cache / ref.name / ref.version, ref.name
        )
        # The agent verifies the download itself, against its own trust store.
        verified = artifacts.verify(
            cached, signing.TrustStore.from_paths([signed_catalog.trust]), ref.digest
        )
        assert verified.manifest.name == "execsnoop"
        assert [p.name for p in settings.artifact_cache.iterdir()] == ["execsnoop"]

        report = NodeReport(
            node=node,
            revision=stored["revision"],
            programs=[
                ProgramReport(
                    name=program,
                    state=ProgramState.ATTACHED,
                    artifact="execsnoop@" + ref.version,
                    digest=ref.digest,
                    updated_at=datetime.now(UTC),
                )
            ],
            reported_at=datetime.now(UTC),
        )
        link.submit(report)
        with fleet_api.client() as admin:
            _eventually(
                lambda: (
                    [s["state"] for s in admin.get(f"/v1/programs/{program}/nodes").json()]
                    == ["Attached"]
                ),
                "the status report reaches the API",
            )
            seen = _eventually(
                lambda: (
                    (n := admin.get(f"/v1/nodes/{node}").json())["appliedRevision"]
                    == stored["revision"]
                    and n
                ),
                "heartbeats carry the applied revision",
            )
        assert seen["readiness"] == "Ready"
    finally:
        link.close()


@pytest.mark.services
def test_an_unknown_artifact_and_an_unreachable_api_are_told_apart(
    fleet_api: services.Api, recorded_features: FeatureReport, tmp_path: Path
) -> None:
    node = _unique("fetch")
    settings = _link_settings(fleet_api, tmp_path, node)
    link = FleetLink(
        settings, features=lambda: _features_of(recorded_features, node), wake=threading.Event()
    )
    link.start()
    try:
        _eventually(link.credential.current, "registration")
        ref = ArtifactRef(name="xdp_counter", version="9.9.9", digest="1" * 64)
        trust = signing.TrustStore([])  # nothing is downloaded to verify
        cache = ArtifactCache(settings, link.credential, trust=lambda: trust)
        problem = cache.fetch(ref)
        assert problem is not None
        assert (problem.state, problem.reason) == (ProgramState.LOAD_FAILED, "ArtifactNotFound")
        assert cache.fetch(ref) is problem, "a refusal is remembered, not asked again"
    finally:
        cache.close()
        link.close()

    down = _link_settings(fleet_api, tmp_path / "down", node).model_copy(
        update={"api_url": f"http://127.0.0.1:{services.free_port()}"}
    )
    # Registered, but the API is gone now.
    offline = ArtifactCache(down, link.credential, trust=lambda: trust)
    try:
        first = offline.fetch(ref)
        assert first is not None
        assert (first.state, first.reason) == (ProgramState.PENDING, "ArtifactDownloadRetrying")
        again = offline.fetch(ref)
        assert again is not None
        assert "next try in" in again.message, "backing off, not hammering"
    finally:
        offline.close()


@pytest.mark.services
def test_a_deleted_node_registers_again_once_an_admin_allows_it(
    fleet_api: services.Api, recorded_features: FeatureReport, tmp_path: Path
) -> None:
    node = _unique("forgot")
    settings = _link_settings(fleet_api, tmp_path, node)
    link = FleetLink(
        settings, features=lambda: _features_of(recorded_features, node), wake=threading.Event()
    )
    link.start()
    try:
        first = _eventually(link.credential.current, "registration")
        with fleet_api.client() as admin:
            assert admin.delete(f"/v1/nodes/{node}").status_code == 204
            # The next heartbeat is refused (401), and so is registering again while the
            # deleted name's tombstone stands: the node stays out...
            _eventually(lambda: link.credential.current() is None, "the token dropped")
            time.sleep(3)
            assert admin.get(f"/v1/nodes/{node}").status_code == 404
            # ...until an admin lifts it; then the agent registers anew and carries on.
            assert admin.delete(f"/v1/node-tombstones/{node}").status_code == 204
            _eventually(lambda: admin.get(f"/v1/nodes/{node}").status_code == 200, "re-register")
        second = link.credential.current()
        assert second not in (None, first)
        assert json.loads(settings.credential_file.read_text())["token"] == second
        assert link.credential.registrations == 2
    finally:
        link.close()

    # A restarted agent uses its stored credential, without registering.
    restarted = FleetLink(
        settings, features=lambda: _features_of(recorded_features, node), wake=threading.Event()
    )
    assert restarted.credential.current() == second
    restarted.close()


@pytest.mark.services
def test_a_wrong_bootstrap_token_is_a_permanent_failure(
    fleet_api: services.Api, recorded_features: FeatureReport, tmp_path: Path
) -> None:
    node = _unique("boot")
    credential = NodeCredential(
        tmp_path / "credential.json",
        node=node,
        api_url=fleet_api.url,
        bootstrap_token="wrong",
        registration=lambda: Registration(
            node=node, features=_features_of(recorded_features, node)
        ),
    )
    client = api_client.ApiClient(fleet_api.url, allow_insecure_http=True)
    try:
        with pytest.raises(
            failures.PermanentFailure, match="rejected the bootstrap token"
        ) as raised:
            credential.ensure(client)
    finally:
        client.close()
    assert not isinstance(raised.value, failures.Unauthorized), "the node credential is kept"
    assert not (tmp_path / "credential.json").exists()


@contextlib.contextmanager
def _running_agent(settings: AgentSettings) -> Iterator[Agent]:
    agent = Agent(settings)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=agent.run_with_api, args=(stop, wake), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        wake.set()
        thread.join(30)
        assert not thread.is_alive()


def _node_states(admin: httpx.Client, program: str) -> dict[str, str]:
    return {s["node"]: s["state"] for s in admin.get(f"/v1/programs/{program}/nodes").json()}


@pytest.mark.bpf
@pytest.mark.services
def test_agent_in_api_mode_attaches_survives_the_api_going_away_and_resumes(
    agent_env: AgentEnv, fleet_api: services.Api, signed_catalog: SignedCatalog
) -> None:
    group, program = _unique("g"), _unique("execs")
    online = agent_env.settings().model_copy(
        update={
            "api_url": fleet_api.url,
            "allow_insecure_http": True,
            "bootstrap_token": SecretStr(fleet_api.bootstrap_token),
            "labels": {"group": group},
            "artifact_dirs": [],  # only what the API serves
            "heartbeat_interval": 0.5,
            "long_poll_wait": 10.0,
        }
    )
    node = online.node_name
    artifact = upload(fleet_api, signed_catalog, "execsnoop")
    with fleet_api.client() as admin:
        with _running_agent(online):
            _eventually(online.credential_file.exists, "registration")
            _put_program(fleet_api, program, artifact, group)
            _eventually(lambda: _node_states(admin, program).get(node) == "Attached", "attached")
        status = json.loads(online.status_file.read_text())
        assert [p["state"] for p in status["programs"]] == ["Attached"]
        assert (online.artifact_cache / "execsnoop").is_dir()
        revision = status["revision"]

        # The API is unreachable now: the cached assignments and artifact still apply.
        offline = online.model_copy(update={"api_url": f"http://127.0.0.1:{services.free_port()}"})
        agent = Agent(offline)
        link = FleetLink(offline, features=lambda: agent.features, wake=threading.Event())
        cache = ArtifactCache(offline, link.credential, trust=lambda: agent.trust)
        try:
            report = agent.reconcile_assignments(cache)
        finally:
            cache.close()
            link.close()
        assert report is not None
        assert report.revision == revision
        assert [(p.name, p.state) for p in report.programs] == [(program, ProgramState.ATTACHED)]

        # Back online with the stored credential: a kill reaches the node and is reported.
        with _running_agent(online):
            assert admin.post(f"/v1/programs/{program}/kill").status_code == 200
            # The API forgets a detached program's per-node row once the node reports it.
            _eventually(lambda: node not in _node_states(admin, program), "detached")
        assert not (agent_env.pin_root / program).exists()
        nodes = admin.get("/v1/nodes").json()
        assert [n["name"] for n in nodes].count(node) == 1, "no second registration"


@pytest.mark.services
def test_a_credential_is_renewed_once_until_the_new_one_has_worked(
    fleet_api: services.Api,
    recorded_features: FeatureReport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = _unique("once")
    credential = NodeCredential(
        tmp_path / "credential.json",
        node=node,
        api_url=fleet_api.url,
        bootstrap_token=fleet_api.bootstrap_token,
        registration=lambda: Registration(
            node=node, features=_features_of(recorded_features, node)
        ),
    )
    client = api_client.ApiClient(fleet_api.url, allow_insecure_http=True)
    try:
        first = credential.ensure(client)
        assert credential.rejected(first)
        second = credential.ensure(client)
        assert second != first
        with caplog.at_level(logging.ERROR):
            assert not credential.rejected(second), "the fresh token was never accepted"
        assert "not registering again" in caplog.text
        assert credential.current() == second
        client.heartbeat(second, Heartbeat(revision=0))
        credential.confirmed()
        assert credential.rejected(second), "after a success, a 401 may renew it again"
        assert credential.ensure(client) not in (first, second)
        assert credential.registrations == 3
    finally:
        client.close()


@pytest.mark.services
def test_a_new_feature_report_is_sent_once_and_remembered(
    fleet_api: services.Api, recorded_features: FeatureReport, tmp_path: Path
) -> None:
    node = _unique("kernel")
    before = _features_of(recorded_features, node)
    settings = _link_settings(fleet_api, tmp_path, node)
    link = FleetLink(settings, features=lambda: before, wake=threading.Event())
    link.features_probed(before)
    link.start()
    try:
        _eventually(link.credential.current, "registration")
    finally:
        link.close()
    assert settings.features_reported_file.read_text() == before.probed_at.isoformat()

    # The node rebooted into another kernel and probed again.
    after = before.model_copy(
        update={"kernel_release": "6.99.0-upgraded", "probed_at": datetime.now(UTC)}
    )
    link = FleetLink(settings, features=lambda: after, wake=threading.Event())
    link.features_probed(after)
    link.start()
    try:
        with fleet_api.client() as admin:
            _eventually(
                lambda: admin.get(f"/v1/nodes/{node}").json()["kernelRelease"] == "6.99.0-upgraded",
                "the new feature report reaches the API",
            )
        _eventually(
            lambda: settings.features_reported_file.read_text() == after.probed_at.isoformat(),
            "the report is remembered as sent",
        )
    finally:
        link.close()
    assert link.credential.registrations == 0, "the stored credential was used"


@pytest.mark.services
def test_after_a_database_restore_the_agent_takes_what_the_api_has_now(
    fleet_api: services.Api,
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine, text

    node, group = _unique("restore"), _unique("g")
    settings = _link_settings(fleet_api, tmp_path, node, labels={"group": group}, long_poll_wait=1)
    wake = threading.Event()
    link = FleetLink(settings, features=lambda: _features_of(recorded_features, node), wake=wake)
    link.start()
    try:
        _eventually(settings.credential_file.exists, "registration")
        artifact = upload(fleet_api, signed_catalog, "execsnoop")
        program = _unique("execs")
        _put_program(fleet_api, program, artifact, group)
        assert wake.wait(30), "new assignments wake the reconcile loop"
        before = json.loads(settings.assignments_file.read_text())
        assert [item["name"] for item in before["programs"]] == [program]
        assert before["revision"] >= 1
        # A backup from before the program: the node's counter is lower than what the
        # agent applied, and the program is not assigned.
        engine = create_engine(fleet_api.environment["BPFLEET_API_DATABASE_URL"])
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM assignment WHERE node = :n"), {"n": node})
            connection.execute(
                text("UPDATE node SET desired_revision = 0 WHERE name = :n"), {"n": node}
            )
        engine.dispose()
        wake.clear()
        assert wake.wait(30), "the restored assignments wake the reconcile loop"
        after = json.loads(settings.assignments_file.read_text())
        assert after["revision"] == 0
        assert after["programs"] == []
    finally:
        link.close()
