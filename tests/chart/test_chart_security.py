"""What the chart gives each pod to trust and to hold: agents reference no Secret but
the bootstrap token's, the API serves TLS with a certificate its clients verify (and
that really serves), scratch space is bounded, and pods restart when what they trust
changes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from bpfleet_cli.localfleet import free_port, stop_process, wait_until
from tests.chart.conftest import CHART, HelmRun, Rendered
from tests.chart.test_chart import containers, env_of

Render = Callable[..., Rendered]


def secrets_referenced(workload: dict[str, Any]) -> set[str]:
    """Every Secret a pod template names: env, envFrom, volumes (projected too)."""
    pod = workload["spec"]["template"]["spec"]
    names = set()
    for container in containers(workload):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


@pytest.mark.parametrize("which", ["default", "override"])
def test_agents_reference_no_secret_but_the_bootstrap_token(
    which: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    daemonset = rendered.find("DaemonSet", "-agent")
    (bootstrap,) = secrets_referenced(daemonset)
    (agent,) = containers(daemonset)
    ref = env_of(agent)["BPFLEET_AGENT_BOOTSTRAP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": bootstrap, "key": "bootstrap-token"}
    operator = rendered.find("Deployment", "-operator")
    assert bootstrap not in secrets_referenced(operator)
    api = rendered.find("Deployment", "-api")
    assert bootstrap in secrets_referenced(api)
    for secret in rendered.all("Secret"):
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        assert not {"admin-token", "bootstrap-token"} <= keys, secret["metadata"]["name"]
        if secret["metadata"]["name"] == bootstrap:
            assert keys == {"bootstrap-token"}  # nothing an agent should not read
    if which == "default":
        assert rendered.find("Secret", "-bootstrap-token")["metadata"]["name"] == bootstrap


@pytest.mark.parametrize(("which", "limit"), [("default", "256Mi"), ("override", "1Gi")])
def test_the_api_scratch_space_is_bounded(
    which: str, limit: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    pod = rendered.find("Deployment", "-api")["spec"]["template"]["spec"]
    (tmp,) = [volume for volume in pod["volumes"] if volume["name"] == "tmp"]
    assert tmp["emptyDir"] == {"sizeLimit": limit}


def _pem(rendered: Rendered) -> tuple[x509.Certificate, x509.Certificate, bytes]:
    """The generated certificate, its key, and the CA agents get (from the ConfigMap)."""
    secret = rendered.find("Secret", "-api-tls")
    assert secret["type"] == "kubernetes.io/tls"
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca_map = rendered.find("ConfigMap", "-api-ca")
    authority = x509.load_pem_x509_certificate(ca_map["data"]["ca.crt"].encode())
    return certificate, authority, base64.b64decode(secret["data"]["tls.key"])


def test_the_api_serves_tls_with_a_certificate_its_clients_verify(default: Rendered) -> None:
    certificate, authority, _ = _pem(default)
    public_key = authority.public_key()
    public_key.verify(  # type: ignore[union-attr,call-arg]
        certificate.signature,
        certificate.tbs_certificate_bytes,
        padding.PKCS1v15(),  # type: ignore[arg-type]
        certificate.signature_hash_algorithm,  # type: ignore[arg-type]
    )
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    service = default.find("Service", "-api")
    fqdn = f"{service['metadata']['name']}.bpfleet.svc"
    assert {fqdn, f"{fqdn}.cluster.local"} <= set(names.value.get_values_for_type(x509.DNSName))
    assert service["spec"]["ports"][0]["name"] == "https"

    api = default.find("Deployment", "-api")
    (server,) = containers(api)
    assert "--ssl-certfile=/etc/bpfleet/tls/tls.crt" in server["command"]
    assert "--ssl-keyfile=/etc/bpfleet/tls/tls.key" in server["command"]
    assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    tls_volume = next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"].endswith("-api-tls")

    ca_map = default.find("ConfigMap", "-api-ca")["metadata"]["name"]
    for workload, variable in (
        (default.find("DaemonSet", "-agent"), "BPFLEET_AGENT_API_CA"),
        (default.find("Deployment", "-operator"), "BPFLEET_OPERATOR_API_CA"),
    ):
        (container,) = containers(workload)
        path = Path(env_of(container)[variable]["value"])
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
        volume = next(
            v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
        )
        assert volume["configMap"]["name"] == ca_map  # the CA, never the key's Secret
        assert {"key": "ca.crt", "path": path.name} in volume["configMap"]["items"]
        assert not any(name.endswith("-api-tls") for name in secrets_referenced(workload))
        assert "BPFLEET_AGENT_ALLOW_INSECURE_HTTP" not in env_of(container)
        # Only the API's client trusts the API's CA: the process's default trust stays.
        assert "SSL_CERT_FILE" not in env_of(container)


@pytest.fixture
def served(default: Rendered, tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """The API under uvicorn, started with the chart's own command and certificate."""
    secret = default.find("Secret", "-api-tls")
    tls = tmp_path / "etc-bpfleet-tls"
    tls.mkdir()
    for key in ("tls.crt", "tls.key"):
        (tls / key).write_bytes(base64.b64decode(secret["data"][key]))
    ca = tmp_path / "ca.crt"
    ca.write_text(default.find("ConfigMap", "-api-ca")["data"]["ca.crt"])
    (server,) = containers(default.find("Deployment", "-api"))
    port = free_port()
    command = [
        argument.replace("/etc/bpfleet/tls", str(tls))
        .replace("--host=0.0.0.0", "--host=127.0.0.1")
        .replace(f"--port={server['ports'][0]['containerPort']}", f"--port={port}")
        for argument in server["command"]
    ]
    assert command[0] == "uvicorn"
    environment = {
        **os.environ,
        "BPFLEET_API_DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
        "BPFLEET_API_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # none: not needed
    }
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", *command], env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    service = default.find("Service", "-api")["metadata"]["name"]
    try:
        yield port, f"{service}.bpfleet.svc", ca
    finally:
        stop_process(process)
        log.close()


def _healthz(port: int, hostname: str, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        tls.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    return answer


def test_the_api_really_serves_the_chart_certificate(
    served: tuple[int, str, Path], render: Render, tmp_path: Path
) -> None:
    port, hostname, ca = served
    wait_until(lambda: _healthz(port, hostname, ca), 60, "the API over TLS")
    assert _healthz(port, hostname, ca).startswith(b"HTTP/1.1 200")
    # A client with another CA (another install's) refuses the API.
    other = tmp_path / "other-ca.crt"
    other.write_text(render().find("ConfigMap", "-api-ca")["data"]["ca.crt"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _healthz(port, hostname, other)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _healthz(port, "somewhere.else", ca)


CA = (
    "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUaGVyZSBiZSBhIENBIG5vdCBhIHJlYWwgb25lMAoGCCqG\n"
    "-----END CERTIFICATE-----\n"
)


def test_cert_manager_issues_the_certificate_when_asked(
    render: Render, run_helm: HelmRun, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(CA)
    rendered = render(
        "--set",
        "api.tls.certManager.enabled=true",
        "--set",
        "api.tls.certManager.issuerRef.name=fleet-ca",
        "--set",
        "api.tls.certManager.issuerRef.kind=ClusterIssuer",
        "--set-file",
        f"api.tls.ca={ca_file}",
    )
    certificate = rendered.find("Certificate", "-api")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["issuerRef"] == {
        "name": "fleet-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "bpfleet-api.bpfleet.svc" in certificate["spec"]["dnsNames"]
    api = rendered.find("Deployment", "-api")
    assert certificate["spec"]["secretName"] in secrets_referenced(api)
    assert not [s for s in rendered.all("Secret") if s["metadata"]["name"].endswith("-api-tls")]
    assert rendered.find("ConfigMap", "-api-ca")["data"]["ca.crt"] == CA

    for missing, complaint in (
        (["--set", "api.tls.certManager.issuerRef.name=x"], "api.tls.ca"),
        (["--set-file", f"api.tls.ca={ca_file}"], "issuerRef.name is required"),
    ):
        result = run_helm(
            "template", str(CHART), "--set", "api.tls.certManager.enabled=true", *missing
        )
        assert result.returncode != 0
        assert complaint in result.stderr


def test_without_tls_agents_are_told_plain_http_is_meant(render: Render, run_helm: HelmRun) -> None:
    rendered = render("--set", "api.tls.enabled=false")
    (agent,) = containers(rendered.find("DaemonSet", "-agent"))
    environment = env_of(agent)
    assert environment["BPFLEET_AGENT_API_URL"]["value"].startswith("http://")
    assert environment["BPFLEET_AGENT_ALLOW_INSECURE_HTTP"]["value"] == "true"
    assert "BPFLEET_AGENT_API_CA" not in environment
    assert not [c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-api-ca")]
    notes = run_helm(
        "install", "bpfleet", str(CHART), "--dry-run=client", "--set", "api.tls.enabled=false"
    )
    assert "tokens cross the network in clear" in notes.stdout


def _content_hash(data: dict[str, str]) -> str:
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]


def test_pods_restart_when_the_trust_keys_content_changes(render: Render, tmp_path: Path) -> None:
    key = tmp_path / "release.pub"
    hashes = []
    for body in ("AAAA", "BBBB"):
        key.write_text(f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
        rendered = render("--set-file", f"trust.keys.release\\.pub={key}")
        data = rendered.find("ConfigMap", "-trust")["data"]
        assert data == {"release.pub": key.read_text()}
        expected = _content_hash(data)
        for kind, component in (
            ("DaemonSet", "agent"),
            ("Deployment", "api"),
            ("Deployment", "worker"),
        ):
            annotations = rendered.find(kind, f"-{component}")["spec"]["template"]["metadata"]
            assert annotations["annotations"]["checksum/trust"] == expected, component
        hashes.append(expected)
    assert hashes[0] != hashes[1]
