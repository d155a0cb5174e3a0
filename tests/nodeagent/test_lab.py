"""The policy lab: a topology as namespaces, policed by the real datapath, probed for real."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bpfleet_agent import datapath, lab
from bpfleet_cli import lab_commands
from bpfleet_core import signing
from bpfleet_core.features import FeatureReport
from bpfleet_core.netpol import compiling, models, simulating, validating
from tests.conftest import REPO, SignedCatalog
from tests.core.netpol import test_differential as differential

NETPOL_DATA = REPO.parent / "shared" / "netpol"
TOPOLOGY = NETPOL_DATA / "topology.json"
CASES = NETPOL_DATA / "cases.json"
needs_conformance_data = pytest.mark.skipif(
    not CASES.is_file(), reason=f"no conformance data at {NETPOL_DATA}"
)


def _cases() -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in json.loads(CASES.read_text())["cases"]}


def _source(catalog: SignedCatalog, report: FeatureReport) -> lab.ArtifactSource:
    return lab.ArtifactSource(
        [catalog.directory], signing.TrustStore.from_paths([catalog.trust]), report
    )


def _lab_leftovers(pid: int) -> list[str]:
    netns = Path("/var/run/netns")
    names = [p.name for p in netns.iterdir()] if netns.is_dir() else []
    pins = [p.name for p in Path("/sys/fs/bpf").iterdir()]
    return [
        name
        for name in names + pins
        if name.startswith((f"bpfl-lab-{pid}-", f"bpfleet-lab-{pid}-"))
    ]


def test_sctp_is_refused_with_its_own_exit_code(tmp_path: Path) -> None:
    policy = tmp_path / "none.yaml"
    policy.write_text("")
    result = CliRunner().invoke(
        lab_commands.app,
        ["probe", "--topology", str(TOPOLOGY), "--protocol", "SCTP", "--port", "80"],
    )
    assert result.exit_code == lab_commands.EXIT_UNAVAILABLE, result.output
    assert "no SCTP sockets" in result.output
    with pytest.raises(lab.ProtocolUnavailable, match="SCTP"):
        lab.check_protocol("SCTP")


@pytest.fixture(scope="module")
def standard_lab(
    signed_catalog: SignedCatalog, feature_report: FeatureReport
) -> Iterator[tuple[lab.PolicyLab, models.Topology]]:
    if not TOPOLOGY.is_file():
        pytest.skip(f"no topology at {TOPOLOGY}")
    topology = models.Topology.model_validate_json(TOPOLOGY.read_text())
    pods = {key: topology.pods[key].ip for key in topology.pod_order()}
    with lab.PolicyLab(pods, _source(signed_catalog, feature_report)) as running:
        yield running, topology


@pytest.mark.bpf
@needs_conformance_data
@pytest.mark.parametrize(
    "case_id",
    [case["id"] for case in json.loads(CASES.read_text())["cases"]] if CASES.is_file() else [],
)
def test_the_lab_measures_the_published_rows(
    standard_lab: tuple[lab.PolicyLab, models.Topology], case_id: str
) -> None:
    running, topology = standard_lab
    case = _cases()[case_id]
    policies = [validating.validate(document).policy for document in case["policies"]]
    for probe in case["probes"]:
        world = topology.with_labels(**(probe["label_changes"] or {}))
        running.enforce(compiling.compile_policies(policies, world))
        measured = running.probe(probe["protocol"], probe["port"], timeout=1.0)
        result: simulating.Matrix = {
            "protocol": probe["protocol"],
            "port": probe["port"],
            "allowed": measured,
        }
        assert simulating.rows(result, world.pod_order()) == probe["expected_rows"]
        # The published rows are TCP; UDP through the datapath must match the simulator.
        udp = running.probe("UDP", probe["port"], timeout=1.0)
        assert udp == simulating.matrix(policies, world, "UDP", probe["port"])["allowed"]


@pytest.fixture
def cached_features(tmp_path: Path, feature_report: FeatureReport) -> dict[str, str]:
    """Agent settings whose cached feature report spares the CLI a probe."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "features.json").write_text(feature_report.to_json())
    return {"BPFLEET_AGENT_STATE_DIR": str(state)}


@pytest.mark.bpf
@needs_conformance_data
def test_the_cli_prints_the_measured_matrix(
    signed_catalog: SignedCatalog, cached_features: dict[str, str], tmp_path: Path
) -> None:
    import yaml

    case = _cases()["H21-egress-ipblock-single-host"]
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump_all(case["policies"]))
    before = _lab_leftovers(os.getpid())  # the module's own lab may be up
    result = CliRunner().invoke(
        lab_commands.app,
        [
            "probe",
            "--artifacts",
            str(signed_catalog.directory),
            "--trust",
            str(signed_catalog.trust),
            "--topology",
            str(TOPOLOGY),
            "--protocol",
            "TCP",
            "--port",
            "80",
            "--timeout",
            "1",
            str(policies),
        ],
        env=cached_features,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["protocol"], printed["port"]) == ("TCP", 80)
    order = list(printed["allowed"])
    assert order == json.loads(TOPOLOGY.read_text())["order"]
    assert simulating.rows(printed, order) == case["probes"][0]["expected_rows"]
    assert _lab_leftovers(os.getpid()) == before


@pytest.mark.bpf
@needs_conformance_data
def test_a_terminated_run_removes_its_lab(
    signed_catalog: SignedCatalog, cached_features: dict[str, str], tmp_path: Path
) -> None:
    import yaml

    # A policy that blocks some pairs, so the probe is still waiting for them.
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump_all(_cases()["H21-egress-ipblock-single-host"]["policies"]))
    command = [
        sys.executable,
        "-c",
        "from bpfleet_cli.lab_commands import app; app()",
        "probe",
        "--artifacts", str(signed_catalog.directory),
        "--trust", str(signed_catalog.trust),
        "--topology", str(TOPOLOGY),
        "--port", "80",
        "--timeout", "30",  # still probing when the signal comes
        str(policies),
    ]  # fmt: skip
    run = subprocess.Popen(
        command, env={**os.environ, **cached_features}, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while len(_lab_leftovers(run.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lab_leftovers(run.pid), "the lab never came up"
        time.sleep(0.5)  # into the probe
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == lab_commands.EXIT_INTERRUPTED, stderr
    assert _lab_leftovers(run.pid) == [], stderr


@pytest.mark.bpf
def test_a_lab_that_cannot_start_leaves_nothing_behind(
    feature_report: FeatureReport, tmp_path: Path
) -> None:
    empty = tmp_path / "artifacts"
    empty.mkdir()
    source = lab.ArtifactSource([empty], signing.TrustStore.from_paths([]), feature_report)
    before = _lab_leftovers(os.getpid())

    with (
        pytest.raises(datapath.DatapathError, match="netpol"),
        lab.PolicyLab({"x/a": ipaddress.IPv4Address("10.66.0.1")}, source),
    ):
        pass
    assert _lab_leftovers(os.getpid()) == before


@pytest.mark.bpf
def test_clean_stale_removes_only_what_dead_runs_left() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"bpfl-lab-{dead.pid}-feed00-node"
    mine = f"bpfl-lab-{os.getpid()}-feed00-node"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", mine], check=True)
    try:
        removed = lab.clean_stale()
        assert stale in removed
        assert mine not in removed
        assert not (Path("/var/run/netns") / stale).exists()
        assert (Path("/var/run/netns") / mine).exists()
    finally:
        for name in (stale, mine):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@st.composite
def labelled_policies(
    draw: st.DrawFn, topology: models.Topology
) -> tuple[models.Topology, list[models.Policy]]:
    """Random labels on the lab's pods and namespaces, and random policies over them."""
    world = topology.with_labels(
        podlabels={
            key: draw(differential.labels(differential.POD_LABELS)) for key in topology.pods
        },
        nslabels={
            name: draw(differential.labels(differential.NAMESPACE_LABELS))
            for name in topology.namespaces
        },
    )
    count = draw(st.integers(min_value=1, max_value=3))
    documents = [draw(differential.policy_documents(f"p{i}", world)) for i in range(count)]
    return world, [validating.validate(document).policy for document in documents]


@pytest.mark.bpf
@needs_conformance_data
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_policies_on_the_real_datapath_match_the_simulator(
    standard_lab: tuple[lab.PolicyLab, models.Topology], data: st.DataObject
) -> None:
    running, topology = standard_lab
    world, policies = data.draw(labelled_policies(topology))
    protocol = data.draw(st.sampled_from(("TCP", "UDP")))
    port = data.draw(st.sampled_from((80, 81)))
    running.enforce(compiling.compile_policies(policies, world))
    measured = running.probe(protocol, port, timeout=1.0)
    expected = simulating.matrix(policies, world, protocol, port)["allowed"]
    assert measured == expected, [policy.model_dump(by_alias=True) for policy in policies]
