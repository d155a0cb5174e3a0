"""The fleet commands' pure parts: selectors, contexts, CI report formats, the diff's
planning and connectivity cells, allowances, progress lines."""

from __future__ import annotations

import io
import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from bpfleet_api.views import ArtifactView, ProgramView, SummaryView
from pydantic import TypeAdapter

from bpfleet_cli import contexts, diffing, reports
from bpfleet_cli.check_commands import Allowance, lacking_phrase
from bpfleet_cli.diff_commands import MAX_FLIPS_SHOWN, _report
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_cli.get_commands import VERIFIER_LINES, _excerpt
from bpfleet_cli.options import label_selector
from bpfleet_cli.progress import Progress
from bpfleet_cli.tables import age, selector_text, short_revision
from bpfleet_core import bundles
from bpfleet_core.netpol import models
from tests.manifests import program_yaml

REPO = Path(__file__).resolve().parents[2]
POLICY = TypeAdapter(models.AnyPolicy)


# ------------------------------------------------------------------------- selectors


def test_selectors_read_kubectl_syntax() -> None:
    selector = label_selector("tier=edge, zone in (a, b),!canary,app!=x,env")
    assert selector.matches({"tier": "edge", "zone": "b", "env": "prod"})
    assert not selector.matches({"tier": "edge", "zone": "c", "env": "prod"})
    assert not selector.matches({"tier": "edge", "zone": "a", "env": "p", "canary": "1"})
    assert not selector.matches({"tier": "edge", "zone": "a", "env": "p", "app": "x"})
    assert not selector.matches({"tier": "edge", "zone": "a"})  # env must exist
    assert selector_text(selector) == "tier=edge,zone in (a,b),!canary,app notin (x),env"
    assert selector_text(label_selector("")) == "<all>"
    assert label_selector("").matches({})


@pytest.mark.parametrize(
    "text", ["zone in (a", "=x", "a==b==c", "a b", "ke y=1", "x in ()", "UPPER/case=x", "a=1,a=2"]
)
def test_selectors_refuse_what_they_cannot_read(text: str) -> None:
    with pytest.raises(CommandError) as refused:
        label_selector(text)
    assert refused.value.code == ExitCode.USAGE
    assert refused.value.message.startswith(f"invalid label selector {text!r}: ")
    assert "\n" not in refused.value.message


# -------------------------------------------------------------------------- contexts


def test_contexts_resolve_in_order_and_never_leak_a_token(tmp_path: Path) -> None:
    config = tmp_path / "bpfleet" / "config.yaml"
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    saved = contexts.Config(
        current_context="prod",
        contexts={
            "prod": contexts.Context(url="https://prod.example/", token="bpf_prod"),
            "lab": contexts.Context(url="http://lab:8080", token="bpf_lab", trust=(Path("/k"),)),
        },
    )
    contexts.save(saved, config)
    assert config.stat().st_mode & 0o777 == 0o600
    assert config.parent.stat().st_mode & 0o777 == 0o700
    assert contexts.load(config) == saved

    current = contexts.resolve(None, environ)
    assert (current.url, current.token, current.context) == (
        "https://prod.example",
        "bpf_prod",
        "prod",
    )
    chosen = contexts.resolve("lab", {**environ, "BPFLEET_CONTEXT": "prod"})
    assert (chosen.url, chosen.trust) == ("http://lab:8080", (Path("/k"),))
    named = contexts.resolve(None, {**environ, "BPFLEET_CONTEXT": "lab"})
    assert named.context == "lab"
    overridden = contexts.resolve("lab", {**environ, "BPFLEET_TOKEN": "bpf_env"})
    assert (overridden.url, overridden.token) == ("http://lab:8080", "bpf_env")
    # Another URL from the environment: the current context's token is not sent there.
    elsewhere = contexts.resolve(None, {**environ, "BPFLEET_API_URL": "http://ci:1"})
    assert (elsewhere.url, elsewhere.token, elsewhere.context) == ("http://ci:1", None, None)

    with pytest.raises(CommandError) as unknown:
        contexts.resolve("staging", environ)
    assert unknown.value.code == ExitCode.CONFIGURATION
    assert "unknown context 'staging'" in unknown.value.message
    with pytest.raises(CommandError) as bad_url:
        contexts.resolve(None, {**environ, "BPFLEET_API_URL": "fleet.example"})
    assert bad_url.value.code == ExitCode.CONFIGURATION


def test_a_broken_configuration_is_named_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    for text, words in (
        ("contexts: {a: {url: [x", "not valid YAML"),
        ("contexts: {a: {url: ftp://x}}", "contexts.a.url"),
        ("current-context: b\ncontexts: {}", "current-context 'b'"),
        ("contexts: {a: {url: http://x, extra: 1}}", "contexts.a.extra"),
    ):
        config.write_text(text)
        with pytest.raises(CommandError) as refused:
            contexts.resolve(None, {"BPFLEET_CONFIG": str(config)})
        assert words in refused.value.message
        assert refused.value.code in (ExitCode.CONFIGURATION, ExitCode.INVALID_INPUT)


# --------------------------------------------------------------------------- reports


def test_github_annotations_escape_as_documented() -> None:
    report = reports.Report(
        "preflight",
        [
            reports.Case(
                "odd",
                findings=[
                    reports.Finding(
                        "error", "50% of nodes:\nlack it, really", "dir,a:b/x.yaml", 7, "t, one"
                    ),
                    reports.Finding("notice", "no file at all"),
                ],
            )
        ],
    )
    first, second = reports.github_commands(report)
    assert (
        first
        == "::error file=dir%2Ca%3Ab/x.yaml,line=7,title=t%2C one::50%25 of nodes:%0Alack it, really"
    )
    assert second == "::notice title=bpfleet preflight::no file at all"


def test_gitlab_report_and_junit() -> None:
    report = reports.Report(
        "validate",
        [
            reports.Case(
                "a.yaml",
                "a.yaml",
                findings=[
                    reports.Finding("error", "spec: bad", "a.yaml", 3, "invalid manifest"),
                    reports.Finding("error", "spec: worse", "a.yaml", 3, "invalid manifest"),
                    reports.Finding("warning", "meh", "a.yaml", 9, "manifest warning"),
                ],
            ),
            reports.Case("b.yaml", "b.yaml", output=["fine"]),
        ],
        fallback_path="repo",
    )
    issues = reports.gitlab_code_quality(report)
    assert [issue["severity"] for issue in issues] == ["major", "major", "minor"]
    assert issues[0]["location"] == {"path": "a.yaml", "lines": {"begin": 3}}
    assert issues[0]["check_name"] == "bpfleet/validate/invalid manifest"
    assert len({issue["fingerprint"] for issue in issues}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", issue["fingerprint"]) for issue in issues)
    suite = ElementTree.fromstring(reports.junit_xml(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase[@name='a.yaml']/failure")
    assert failure is not None
    assert failure.text == "spec: bad\nspec: worse"
    assert suite.find("testcase[@name='b.yaml']/system-out").text == "fine"  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- diff


def topology() -> models.Topology:
    def pod(ip: str, **labels: str) -> models.Pod:
        ports = (models.ContainerPort(name="pg", port=5432),) if labels.get("app") == "db" else ()
        return models.Pod(labels=labels, ip=ipaddress.ip_address(ip), ports=ports, node="n1")

    return models.Topology(
        namespaces={"shop": {}},
        pods={
            "shop/db": pod("10.0.0.1", app="db"),
            "shop/web": pod("10.0.0.2", app="web"),
        },
        nodes={"n1": {}},
    )


def policy(**spec: Any) -> models.Policy:
    document = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "shop", "name": "db"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, **spec},
    }
    return POLICY.validate_python(document)


def test_port_segments_cover_every_port_once() -> None:
    rules = policy(
        ingress=[
            {
                "ports": [
                    {"port": "pg"},
                    {"port": 8000, "endPort": 8080},
                    {"protocol": "UDP", "port": 53},
                ]
            }
        ]
    )
    tcp = diffing.segments([rules], topology(), "TCP")
    assert tcp == [(1, 5431), (5432, 5432), (5433, 7999), (8000, 8080), (8081, 65535)]
    assert diffing.segments([rules], topology(), "UDP") == [(1, 52), (53, 53), (54, 65535)]
    assert diffing.segments([], topology(), "SCTP") == [(1, 65535)]
    edge = policy(ingress=[{"ports": [{"port": 1}, {"port": 65535}]}])
    assert diffing.segments([edge], topology(), "TCP") == [(1, 1), (2, 65534), (65535, 65535)]


def test_flips_are_exact_cells_with_port_ranges() -> None:
    allow_pg = policy(ingress=[{"from": [{"podSelector": {}}], "ports": [{"port": "pg"}]}])
    found = diffing.flips([], [allow_pg], topology(), [allow_pg])
    assert [(f.describe(), f.policies) for f in found] == [
        ("shop/web -> shop/db TCP 1-5431,5433-65535: allowed -> denied", ("shop/db",)),
        ("shop/web -> shop/db UDP 1-65535: allowed -> denied", ("shop/db",)),
    ]
    assert found[0].covers(80)
    assert not found[0].covers(5432)
    assert diffing.flips([allow_pg], [allow_pg], topology()) == []
    assert diffing.flips([], [allow_pg], models.Topology(namespaces={}, pods={})) == []


def artifact(digest: str, minutes: int) -> ArtifactView:
    """An upload as ``GET /v1/artifacts`` lists it (pinning reads no manifest)."""
    return ArtifactView.model_construct(
        digest=digest,
        name="execsnoop",
        version="1.0.0",
        signer="k",
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
    )


def program_view(name: str, spec: dict[str, Any], killed: bool = False) -> ProgramView:
    return ProgramView(
        name=name,
        generation=1,
        killed=killed,
        spec=spec,
        summary=SummaryView(desired=0, attached=0, failed=0, incompatible=0, pending=0),
        rollout=None,
    )


def test_programs_compare_as_stored_with_the_digest_the_api_would_pin() -> None:
    old, new = "a" * 64, "b" * 64
    artifacts = [artifact(old, 0), artifact(new, 5)]
    bundle = bundles.load(
        {
            "p/execs.yaml": program_yaml(),
            "p/same.yaml": program_yaml("same"),
            "p/edge.yaml": program_yaml("edge") + "  nodeSelector: {matchLabels: {tier: edge}}\n",
        }
    )
    assert bundle.valid, bundle.problems
    pinned = {d.name: diffing.stored_spec(diffing.pin(d.spec, artifacts)) for d in bundle.programs}
    assert pinned["execs"]["artifact"]["digest"] == new  # the newest upload
    fleet = [
        program_view(
            "execs", {**pinned["execs"], "artifact": {**pinned["execs"]["artifact"], "digest": old}}
        ),
        program_view("same", pinned["same"]),
        program_view("gone", pinned["same"]),
        program_view("edge", pinned["edge"], killed=True),
    ]
    nodes = {"n1": {"tier": "edge"}, "n2": {"tier": "core"}}
    changes = {c.name: c for c in diffing.plan_programs(bundle.programs, fleet, artifacts, nodes)}
    assert set(changes) == {"execs", "gone", "edge"}  # "same" holds already
    execs = changes["execs"]
    assert (execs.action, execs.digest_before, execs.digest_after) == ("changed", old, new)
    assert execs.nodes == ("n1", "n2")
    assert f"-  digest: {old}" in execs.spec_diff
    assert f"+  digest: {new}" in execs.spec_diff
    assert execs.origin == "p/execs.yaml:4"
    assert (changes["gone"].action, changes["gone"].nodes) == ("removed", ("n1", "n2"))
    assert changes["edge"].revived
    assert changes["edge"].nodes == ("n1",)


def test_the_diff_text_shows_a_bounded_number_of_cells() -> None:
    many = tuple(
        diffing.Flip(f"ns/c{index}", "ns/s", "TCP", ((1, 65535),), True, False)
        for index in range(MAX_FLIPS_SHOWN + 10)
    )
    change = diffing.PolicyChange("ns/p", "added", "p.yaml:3", ())
    report, lines = _report(diffing.Plan((), (change,), many), {}, ".")
    shown = [line for line in lines if "-> ns/s TCP" in line]
    assert len(shown) == MAX_FLIPS_SHOWN
    assert "  ... and 10 more (-o json lists all)" in lines
    assert report.cases[0].findings[0].file == "p.yaml"


# ---------------------------------------------------------------- preflight, output


@pytest.mark.parametrize(
    ("text", "incompatible", "selected", "allowed"),
    [
        (None, 0, 3, True),
        (None, 1, 3, False),
        ("1", 1, 3, True),
        ("1", 2, 3, False),
        ("34%", 1, 3, True),
        ("33%", 1, 3, False),
        ("0%", 0, 0, True),
        ("100%", 3, 3, True),
    ],
)
def test_allowances(text: str | None, incompatible: int, selected: int, allowed: bool) -> None:
    assert Allowance.parse(text).allows(incompatible, selected) is allowed


@pytest.mark.parametrize("text", ["101%", "-1", "1.5", "a", "%"])
def test_allowances_refuse_nonsense(text: str) -> None:
    with pytest.raises(CommandError) as refused:
        Allowance.parse(text)
    assert refused.value.code == ExitCode.USAGE


def test_phrases_and_excerpts() -> None:
    assert lacking_phrase("kernel lacks map type ringbuf") == "lack map type ringbuf"
    assert lacking_phrase("kernel cannot attach kprobe programs") == "cannot attach kprobe programs"
    log = "\n".join(f"{index}: insn" for index in range(VERIFIER_LINES + 8))
    excerpt = _excerpt(log)
    assert excerpt[0] == "... (8 earlier line(s))"
    assert excerpt[-1] == f"{VERIFIER_LINES + 7}: insn"
    assert len(excerpt) == VERIFIER_LINES + 1
    assert _excerpt("a\n\nb") == ["a", "b"]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert [age(now - timedelta(seconds=s), now) for s in (5, 300, 7200, 200000)] == [
        "5s",
        "5m",
        "2h",
        "2d",
    ]
    assert age(None) == "-"
    assert short_revision("main@sha1:0123456789abcdef") == "main@sha1:0123456"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_a_terminal_line_and_logs_plain_lines() -> None:
    log = io.StringIO()
    progress = Progress(log)
    for line in ("step 1", "step 1", "step 2"):
        progress.show(line)
    progress.finish("done")
    assert log.getvalue() == "step 1\nstep 2\ndone\n"
    terminal = Terminal()
    progress = Progress(terminal)
    progress.show("step 1")
    progress.show("step 2")
    progress.finish("done")
    assert terminal.getvalue() == "\r\x1b[2Kstep 1\r\x1b[2Kstep 2\r\x1b[2Kdone\n"


def test_reports_print_what_each_system_reads(capsys: pytest.CaptureFixture[str]) -> None:
    report = reports.Report("diff", [reports.Case("x", findings=[reports.Finding("notice", "n")])])
    reports.emit(report, reports.Output.GITLAB, text=["human"], document={}, junit=None)
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["description"] == "n"
    assert err == "human\n"
    reports.emit(report, reports.Output.JSON, text=["human"], document={"a": 1}, junit=None)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
