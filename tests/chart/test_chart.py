"""The Helm chart, linted and rendered by the real helm."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from bpfleet_api.settings import ApiSettings
from pydantic_settings import BaseSettings

from bpfleet_agent.settings import AgentSettings
from bpfleet_core import crds
from bpfleet_operator.settings import OperatorSettings
from tests.chart.conftest import CHART, OVERRIDE, HelmRun, Rendered

COMPONENT_KINDS = {
    "api": "Deployment",
    "worker": "Deployment",
    "agent": "DaemonSet",
    "operator": "Deployment",
}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# ------------------------------------------------------------------ lint and render


@pytest.mark.parametrize("values", [None, OVERRIDE], ids=["default", "override"])
def test_lint_strict_passes(run_helm: HelmRun, values: Any) -> None:
    arguments = ["lint", "--strict", str(CHART)]
    if values is not None:
        arguments += ["--values", str(values)]
    result = run_helm(*arguments)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("which", ["default", "override"])
def test_every_rendered_document_is_a_kubernetes_object(
    which: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    for doc in rendered.documents:
        assert set(doc) >= {"apiVersion", "kind", "metadata"}, doc
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bpfleet"
    for component, kind in COMPONENT_KINDS.items():
        workload = rendered.find(kind, f"-{component}")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == component
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        rendered.find("ServiceAccount", f"-{component}")


def test_defaults_wire_the_components_together(default: Rendered) -> None:
    api = default.find("Service", "-api")
    url = f"https://{api['metadata']['name']}.bpfleet.svc:{api['spec']['ports'][0]['port']}"
    (agent,) = containers(default.find("DaemonSet", "-agent"))
    (operator,) = containers(default.find("Deployment", "-operator"))
    assert env_of(agent)["BPFLEET_AGENT_API_URL"]["value"] == url
    assert env_of(operator)["BPFLEET_OPERATOR_API_URL"]["value"] == url
    admin = default.find("Secret", "-admin-token")
    assert set(admin["data"]) == {"admin-token"}
    token_ref = env_of(operator)["BPFLEET_OPERATOR_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token_ref == {"name": admin["metadata"]["name"], "key": "admin-token"}
    (api_container,) = containers(default.find("Deployment", "-api"))
    database = env_of(api_container)["BPFLEET_API_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert database == {"name": "bpfleet-database", "key": "url"}
    (worker,) = containers(default.find("Deployment", "-worker"))
    assert worker["command"][:3] == ["celery", "--app=bpfleet_api.tasks", "worker"]
    settings = {k: v for k, v in env_of(api_container).items() if k.startswith("BPFLEET_API_")}
    assert env_of(worker) == settings  # the same BPFLEET_API_* settings
    # Several processes per pod, their histograms summed; connections outlive agents'.
    assert {"--workers=2", "--timeout-keep-alive=130"} <= set(api_container["command"])
    assert env_of(api_container)["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")


def test_override_values_take_effect(override: Rendered) -> None:
    api = override.find("Deployment", "fleet-api")
    (api_container,) = containers(api)
    assert api["spec"]["replicas"] == 2
    assert api_container["image"].startswith("registry.example.org/bpfleet/api@sha256:")
    assert env_of(api_container)["BPFLEET_API_NODE_READY_SECONDS"]["value"] == "30"
    assert env_of(api_container)["BPFLEET_API_TRUST"]["value"] == "/etc/bpfleet/trust"
    assert "valueFrom" in env_of(api_container)["BPFLEET_API_REDIS_URL"]
    assert override.find("Secret", "fleet-database")["stringData"]["url"].startswith("postgres")
    assert not [s for s in override.all("Secret") if s["metadata"]["name"].endswith("-token")]
    (api_container,) = containers(api)
    admin_ref = env_of(api_container)["BPFLEET_API_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert admin_ref["name"] == "fleet-admin-token"
    assert "release.pub" in override.find("ConfigMap", "fleet-trust")["data"]
    (agent,) = containers(override.find("DaemonSet", "fleet-agent"))
    assert agent["image"] == "registry.example.org/bpfleet/agent:1.2.3"
    assert env_of(agent)["BPFLEET_AGENT_LABELS"]["value"] == "tier=edge,zone=eu-1a"
    assert agent["securityContext"]["appArmorProfile"] == {
        "type": "Localhost",
        "localhostProfile": "bpfleet-agent",
    }
    (operator,) = containers(override.find("Deployment", "fleet-operator"))
    assert env_of(operator)["BPFLEET_OPERATOR_API_URL"]["value"] == "https://fleet-api.example.org"
    assert env_of(operator)["BPFLEET_OPERATOR_WEBHOOK_PORT"]["value"] == "0"
    assert not [s for s in override.all("Service") if s["metadata"]["name"].endswith("webhook")]
    roles = {role["metadata"]["namespace"] for role in override.all("Role")}
    assert roles == {"bpfleet", "team-a", "team-b"}
    for doc in override.documents:
        assert doc["metadata"]["labels"]["team"] == "platform"


def test_the_operator_signs_proposals_with_the_key_its_secret_holds(
    default: Rendered, override: Rendered
) -> None:
    operator = override.find("Deployment", "fleet-operator")
    (container,) = containers(operator)
    path = env_of(container)["BPFLEET_OPERATOR_SIGNING_KEY"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "signing-key"]
    (volume,) = [v for v in operator["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["name"] == "signing-key"
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "proposal-signer"
    assert volume["secret"]["items"] == [{"key": "signing-key", "path": "signing-key"}]
    assert path == f"{mount['mountPath']}/signing-key"
    # Unset, as by default: no key, no mount (proposals to signed sources say why not).
    (plain,) = containers(default.find("Deployment", "-operator"))
    assert "BPFLEET_OPERATOR_SIGNING_KEY" not in env_of(plain)
    assert "signing-key" not in {m["name"] for m in plain["volumeMounts"]}


def test_settings_variables_exist_in_the_settings_classes(override: Rendered) -> None:
    classes: dict[str, type[BaseSettings]] = {
        "BPFLEET_API_": ApiSettings,
        "BPFLEET_AGENT_": AgentSettings,
        "BPFLEET_OPERATOR_": OperatorSettings,
    }
    seen = set()
    for component, kind in COMPONENT_KINDS.items():
        for container in containers(override.find(kind, f"-{component}")):
            for name in env_of(container):
                prefix = next((p for p in classes if name.startswith(p)), None)
                if prefix is None:
                    continue
                field = name.removeprefix(prefix).lower()
                assert field in classes[prefix].model_fields, f"{name}: no such setting"
                seen.add(name)
    assert {"BPFLEET_AGENT_NODE_NAME", "BPFLEET_API_DATABASE_URL"} <= seen


def test_install_notes_render_without_a_cluster(run_helm: HelmRun) -> None:
    result = run_helm("install", "bpfleet", str(CHART), "--dry-run=client", "-n", "bpfleet")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n bpfleet create secret generic bpfleet-database" in notes
    assert "no artifact signing keys" in notes


# ------------------------------------------------------------------ the agent


@pytest.mark.parametrize("which", ["default", "override"])
def test_nothing_runs_privileged(which: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    assert "privileged: true" not in rendered.text
    for component, kind in COMPONENT_KINDS.items():
        for container in containers(rendered.find(kind, f"-{component}")):
            context = container["securityContext"]
            assert context.get("privileged", False) is False, component
            assert context["capabilities"]["drop"] == ["ALL"], component
            if component != "agent":
                assert "add" not in context["capabilities"], component
                assert context["runAsNonRoot"] is True, component


def test_agent_capabilities_each_carry_their_reason(default: Rendered) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    declared = values["agent"]["capabilities"]
    (agent,) = containers(default.find("DaemonSet", "-agent"))
    added = agent["securityContext"]["capabilities"]["add"]
    assert added == [entry["name"] for entry in declared]
    assert set(added) == {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"}
    for entry in declared:
        assert len(entry["reason"]) >= 10, entry
        # The rendered DaemonSet says why, right above the capability.
        pattern = rf"\n *# {re.escape(entry['reason'])}\n *- {entry['name']}\n"
        assert re.search(pattern, default.text), f"no reason above {entry['name']}"


def test_agent_sees_the_host_it_manages(default: Rendered) -> None:
    daemonset = default.find("DaemonSet", "-agent")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["hostPID"] is False
    assert pod["automountServiceAccountToken"] is False
    assert {"operator": "Exists"} in pod["tolerations"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (agent,) = containers(daemonset)
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    for path in ("/sys/fs/bpf", "/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"):
        (name,) = [name for name, host in host_paths.items() if host == path]
        assert mounts[name]["mountPath"] == path
    assert mounts["bpffs"].get("readOnly", False) is False
    assert mounts["btf"]["readOnly"] is True
    node_name = env_of(agent)["BPFLEET_AGENT_NODE_NAME"]["valueFrom"]["fieldRef"]
    assert node_name == {"fieldPath": "spec.nodeName"}


# ------------------------------------------------------------------ the operator


def test_operator_rbac_is_narrow(default: Rendered) -> None:
    role = default.find("ClusterRole", "-operator")
    resources = set()
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        resources |= {f"{group}/{r}" for group in rule["apiGroups"] for r in rule["resources"]}
    assert "/secrets" not in resources  # Secrets only by name, in named namespaces
    for plural in ("bpfprograms", "networkpolicies", "gitsources"):
        assert {f"bpfleet.io/{plural}", f"bpfleet.io/{plural}/status"} <= resources
        assert f"bpfleet.io/{plural}/finalizers" in resources
    assert {"/events", "/nodes"} <= resources
    (secrets,) = default.all("Role")
    assert secrets["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    binding = default.find("ClusterRoleBinding", "-operator")
    assert (
        binding["subjects"][0]["name"]
        == default.find("ServiceAccount", "-operator")["metadata"]["name"]
    )


# ------------------------------------------------------------------ values and schema


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ('agent.capabilities=[{"name": "BPF", "reason": ""}]', "reason"),
        ('agent.capabilities=[{"name": "BPF"}]', "reason"),
        ('agent.capabilities=[{"name": "ALL", "reason": "everything, to be safe"}]', "name"),
        ('api.environment="staging"', "environment"),
        ("agent.privileged=true", "privileged"),
        ("operator.webhook.port=70000", "port"),
        ('database.url="mysql://db/bpfleet"', "url"),
        ('agent.pinRoot="/sys/fs/bpf"', "pinRoot"),
        ('trust.keys={"release": "-----BEGIN PUBLIC KEY-----"}', "release"),
        ('operator.signingKeySecret="Proposal Signer"', "signingKeySecret"),
    ],
)
def test_schema_rejects_bad_values(run_helm: HelmRun, setting: str, complaint: str) -> None:
    for command in ("template", "lint"):
        result = run_helm(command, str(CHART), "--set-json", setting)
        assert result.returncode != 0, f"helm {command} accepted {setting}"
        assert complaint in result.stdout + result.stderr


def test_templates_check_what_the_schema_checks(run_helm: HelmRun) -> None:
    # Schema validation can be switched off; the trust store still reads only *.pub.
    result = run_helm(
        "template",
        str(CHART),
        "--skip-schema-validation",
        "--set-json",
        'trust.keys={"release": "-----BEGIN PUBLIC KEY-----"}',
    )
    assert result.returncode != 0
    assert "must end in .pub" in result.stderr


def documented_keys() -> list[tuple[str, bool]]:
    """(dotted key, has a comment right above it) for every key of values.yaml whose
    parent the schema describes field by field (free-form maps hold user data)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    found = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent: Any = schema
        for _, name in stack:
            parent = (parent.get("properties") or {}).get(name, {})
        stack.append((indent, key))
        if "properties" not in parent:
            continue
        previous = lines[number - 1].strip() if number else ""
        found.append((".".join(name for _, name in stack), previous.startswith("#")))
    return found


def test_every_value_is_documented_and_typed() -> None:
    keys = documented_keys()
    assert len(keys) > 100
    undocumented = [key for key, commented in keys if not commented]
    assert undocumented == []


# ------------------------------------------------------------------ CRDs


def test_chart_crds_are_the_generated_ones(run_helm: HelmRun) -> None:
    result = run_helm("show", "crds", str(CHART))
    assert result.returncode == 0, result.stderr
    shipped = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    expected = {resource.crd_name: crds.render(resource) for resource in crds.RESOURCE_KINDS}
    assert shipped == expected


def test_crds_are_left_out_of_templates(default: Rendered, render: Callable[..., Rendered]) -> None:
    assert not default.all("CustomResourceDefinition")
    with_crds = render("--include-crds")
    assert len(with_crds.all("CustomResourceDefinition")) == len(crds.RESOURCE_KINDS)
