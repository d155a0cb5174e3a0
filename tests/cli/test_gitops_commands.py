"""`bpfleet validate` (for CI) and `bpfleet operator standalone`'s input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bpfleet_cli.localfleet import free_port
from tests import services
from tests.api.conftest import upload
from tests.conftest import SignedCatalog
from tests.manifests import program_yaml

BPFLEET = str(Path(sys.executable).parent / "bpfleet")
PROGRAM = program_yaml()


def bpfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BPFLEET, *args], capture_output=True, text=True, timeout=60, check=False)


def test_validate_passes_good_manifests_and_names_each_problem(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "execs.yaml").write_text(PROGRAM)
    (tmp_path / ".git").mkdir()  # hidden directories are not manifests
    (tmp_path / ".git" / "junk.yaml").write_text("{not: [valid")
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "1 file(s) valid: 1 program(s)" in done.stdout

    (tmp_path / "programs" / "bad.yaml").write_text(
        PROGRAM.replace("  name: execs\n", "  name: Bad_Name\n")
    )
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 1
    assert (
        f"{tmp_path}/programs/bad.yaml:4: metadata.name: String should match pattern" in done.stderr
    )
    assert "bpfleet: 1 problem(s) in 2 file(s)" in done.stderr

    assert "no such file or directory" in bpfleet("validate", str(tmp_path / "nope")).stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *.yaml or *.yml manifests found" in bpfleet("validate", str(empty)).stderr


@pytest.mark.services
def test_validate_against_the_fleet_checks_artifacts(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    manifest = tmp_path / "execs.yaml"
    manifest.write_text(PROGRAM)
    with services.api_server(
        f"sqlite:///{tmp_path}/bpfleet.db", redis.url, signed_catalog.trust, tmp_path
    ) as api:
        refused = bpfleet(
            "validate", str(manifest), "--api-url", api.url, "--token", api.admin_token
        )
        assert refused.returncode == 1
        assert (
            "execs.yaml:5: spec: artifact execsnoop@1.0.0 has not been uploaded" in refused.stderr
        )
        upload(api, signed_catalog, "execsnoop")
        done = bpfleet("validate", str(manifest), "--api-url", api.url, "--token", api.admin_token)
        assert done.returncode == 0, done.stderr


DB_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
"""
FLOWS = """\
flows:
  - shop/web -> shop/db TCP/pg expect allow
  - shop/batch -> shop/db TCP/5432 expect deny
"""
ENDPOINTS = """\
endpoints:
  shop/web: {labels: {app: web}}
  shop/batch: {labels: {app: batch}}
  shop/db: {labels: {app: db}, ports: [{name: pg, port: 5432}]}
"""


def test_validate_runs_the_flow_tests_beside_the_policies(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(DB_POLICY)
    flows = tmp_path / "db.flows.yaml"
    flows.write_text(FLOWS + ENDPOINTS)
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "1 file(s) valid: 0 program(s), 1 network policy(ies)" in done.stdout
    assert "2 flow test(s) passed in 1 file(s)" in done.stdout

    flows.write_text(FLOWS + "  - shop/batch -> shop/db TCP/5432 expect allow\n" + ENDPOINTS)
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 1
    assert f"{flows}:4: FAIL: shop/batch -> shop/db TCP/5432 expect allow: denied" in done.stderr
    assert "no ingress rule allows shop/batch on 5432/TCP" in done.stderr
    assert "bpfleet: 1 flow test problem(s) or failure(s); 2 passed" in done.stderr


def test_flow_tests_on_a_topology_file_or_none(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(DB_POLICY)
    (tmp_path / "db.flows.yaml").write_text(FLOWS)
    done = bpfleet("validate", str(tmp_path))
    assert done.returncode == 1
    assert "db.flows.yaml: declares no endpoints: give --topology, --fleet or --api-url" in (
        done.stderr
    )
    topology = tmp_path / "topology.json"
    topology.write_text(
        '{"namespaces": {"shop": {}}, "pods": {'
        '"shop/web": {"labels": {"app": "web"}, "ip": "10.0.0.1"},'
        '"shop/batch": {"labels": {"app": "web"}, "ip": "10.0.0.2"},'
        '"shop/db": {"labels": {"app": "db"}, "ip": "10.0.0.3",'
        ' "ports": [{"name": "pg", "port": 5432}]}}}'
    )
    done = bpfleet("validate", str(tmp_path), "--topology", str(topology))
    # In this topology batch is labelled app=web: let in, against the file's expectation.
    assert done.returncode == 1
    assert (
        "db.flows.yaml:3: FAIL: shop/batch -> shop/db TCP/5432 expect deny: allowed" in done.stderr
    )
    (tmp_path / "db.flows.yaml").write_text("flows:\n  - shop/web => shop/db\n")
    done = bpfleet("validate", str(tmp_path), "--topology", str(topology))
    assert done.returncode == 1
    assert "db.flows.yaml:2:5: not a flow" in done.stderr


@pytest.mark.services
def test_flow_tests_on_the_fleets_live_topology(
    redis: services.Redis, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    from bpfleet_core.features import FeatureReport

    (tmp_path / "db.yaml").write_text(DB_POLICY)
    (tmp_path / "db.flows.yaml").write_text(FLOWS + ENDPOINTS.replace("app: batch", "app: web"))
    features = FeatureReport.model_validate_json(
        (Path(__file__).parent / "feature-report.json").read_text()
    )
    with services.api_server(
        f"sqlite:///{tmp_path}/bpfleet.db", redis.url, signed_catalog.trust, tmp_path
    ) as api:
        with api.client(api.bootstrap_token) as client:
            node = client.post(
                "/v1/agent/register",
                json={
                    "node": "n1",
                    "features": features.model_copy(update={"node": "n1"}).model_dump(mode="json"),
                },
            ).json()
        endpoints = [
            {
                "namespace": "shop",
                "name": name,
                "labels": {"app": app},
                "ip": ip,
                "interface": f"v{name}",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}] if app == "db" else [],
            }
            for name, app, ip in (
                ("web", "web", "10.6.0.1"),
                ("batch", "batch", "10.6.0.2"),
                ("db", "db", "10.6.0.3"),
            )
        ]
        with api.client() as admin:  # the API takes a node's endpoints inside its pod CIDRs
            cidrs = admin.put("/v1/nodes/n1/pod-cidrs", json={"podCIDRs": ["10.6.0.0/24"]})
            assert cidrs.status_code == 200, cidrs.text
        with api.client(node["token"]) as client:
            declared = client.put("/v1/agent/endpoints", json={"endpoints": endpoints})
            assert declared.status_code == 204, declared.text
        # The file's own endpoints (batch as app=web) are not used: the fleet's are.
        done = bpfleet("validate", str(tmp_path), "--api-url", api.url, "--token", api.admin_token)
        assert done.returncode == 0, done.stderr
        assert "2 flow test(s) passed" in done.stdout


def test_standalone_refuses_what_is_not_a_git_source(tmp_path: Path) -> None:
    source = tmp_path / "source.yaml"
    source.write_text(PROGRAM)
    done = bpfleet("operator", "standalone", str(source))
    assert done.returncode == 1
    assert f"bpfleet: {source} is not a GitSource" in done.stderr
    assert "Traceback" not in done.stderr
    missing = bpfleet("operator", "standalone", str(tmp_path / "absent.yaml"))
    assert "cannot read" in missing.stderr


def test_validate_says_so_when_the_fleet_cannot_be_asked(tmp_path: Path) -> None:
    manifest = tmp_path / "execs.yaml"
    manifest.write_text(PROGRAM)
    done = bpfleet("validate", str(manifest), "--api-url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 7  # the API is unreachable
    assert "is unreachable" in done.stderr
    assert "Traceback" not in done.stderr
