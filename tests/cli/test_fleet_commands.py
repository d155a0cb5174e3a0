"""The fleet commands against a real API, worker and three real agents: push, preflight,
get, describe, rollout, wait, kill, contexts, and the one-line errors with their codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import yaml

from bpfleet_cli.exits import ExitCode
from bpfleet_core import signing
from bpfleet_core.resources import BpfProgramSpec
from tests.cli.conftest import BPFLEET, Fleet
from tests.conftest import SignedCatalog, sign_object
from tests.manifests import program_yaml
from tests.polling import wait_for

pytestmark = [pytest.mark.bpf, pytest.mark.services]

RELEASE = os.uname().release
# GitHub's workflow command: ::severity key=value,...::message (escaped as it documents).
GITHUB = re.compile(r"^::(error|warning|notice)( [^:]*)?::(.*)$")


def artifacts_of(catalog: SignedCatalog, directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        files = catalog.files(name)
        for path in (files.object, files.manifest, files.signature):
            shutil.copy(path, directory / path.name)
    return directory


def one_line_error(done: subprocess.CompletedProcess[str], code: ExitCode, *words: str) -> None:
    """The command failed as documented: its code, one line on stderr naming the problem."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bpfleet: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def github_annotations(stdout: str) -> list[dict[str, Any]]:
    """Parse workflow commands as the runner does, undoing the documented escapes."""

    def unescape(text: str) -> str:
        for escaped, char in (
            ("%0D", "\r"),
            ("%0A", "\n"),
            ("%3A", ":"),
            ("%2C", ","),
            ("%25", "%"),
        ):
            text = text.replace(escaped, char)
        return text

    found = []
    for line in stdout.splitlines():
        match = GITHUB.match(line)
        if match is None:
            continue
        properties = dict(
            item.split("=", 1) for item in (match[2] or "").strip().split(",") if item
        )
        found.append(
            {
                "severity": match[1],
                **{key: unescape(value) for key, value in properties.items()},
                "message": unescape(match[3]),
            }
        )
    return found


def put(fleet: Fleet, name: str, spec: dict[str, Any]) -> None:
    with fleet.client() as client:
        client.put_program(name, BpfProgramSpec.model_validate(spec))


def test_push_then_preflight_names_the_missing_feature(
    fleet: Fleet, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    build = artifacts_of(signed_catalog, tmp_path / "build", "execsnoop", "syscount")
    pushed = fleet.run("artifact", "push", str(build), "--trust", str(fleet.trust))
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed execsnoop@1.0.0 sha256:" in pushed.stdout
    assert "pushed syscount@1.0.0" in pushed.stdout
    listed = json.loads(fleet.run("artifact", "list", "-o", "json").stdout)
    assert {(item["name"], item["version"]) for item in listed} >= {
        ("execsnoop", "1.0.0"),
        ("syscount", "1.0.0"),
    }
    inspected = fleet.run("artifact", "inspect", "execsnoop@1.0.0")
    assert inspected.returncode == 0, inspected.stderr
    assert "map types:     array, percpu_array, ringbuf" in inspected.stdout

    manifests = tmp_path / "programs"
    manifests.mkdir()
    (manifests / "execs.yaml").write_text(program_yaml())
    (manifests / "sys.yaml").write_text(
        program_yaml("sys", "syscount", "count_sys_enter", "raw_tracepoint")
    )
    node = fleet.nodes[2].name
    done = fleet.run("preflight", str(manifests))
    assert done.returncode == ExitCode.FOUND, done.stderr
    assert f"1 of 3 nodes lack map type ringbuf: kernel {RELEASE} ({node})" in done.stdout
    assert "sys (syscount@1.0.0): all 3 selected node(s) can run it" in done.stdout
    assert "1 of 2 program(s) cannot run where selected: execs" in done.stderr

    # The allowance, as a count and as a share of the selected nodes (1 of 3 is 33.3%).
    assert fleet.run("preflight", str(manifests), "--allow-incompatible", "1").returncode == 0
    assert fleet.run("preflight", str(manifests), "--allow-incompatible", "34%").returncode == 0
    assert fleet.run("preflight", str(manifests), "--allow-incompatible", "33%").returncode == 1
    # A selector narrows the nodes: the edge nodes all have ring buffers.
    edge = fleet.run("preflight", str(manifests / "execs.yaml"), "-l", "tier=edge")
    assert edge.returncode == 0, edge.stdout
    assert "all 2 selected node(s) can run it" in edge.stdout

    # An artifact not deployed yet: its manifest alone is enough.
    fentry = signed_catalog.files("fentry_unlink").manifest
    found = fleet.run("preflight", str(fentry), "-o", "json")
    assert found.returncode == ExitCode.FOUND
    [verdict] = json.loads(found.stdout)["programs"]
    assert verdict["incompatible"] == 3
    missing = {item["feature"]: item for item in verdict["missing"]}
    assert "kernel lacks program type tracing" in missing
    assert missing["kernel lacks program type tracing"]["kernels"] == [RELEASE]
    assert len(missing["kernel lacks program type tracing"]["nodes"]) == 3

    # Annotations as GitHub and GitLab read them, and a JUnit report.
    junit = tmp_path / "preflight.xml"
    github = fleet.run("preflight", str(manifests), "-o", "github", "--junit", str(junit))
    [annotation] = github_annotations(github.stdout)
    assert annotation == {
        "severity": "error",
        "file": str(manifests / "execs.yaml"),
        "line": "4",
        "title": "incompatible nodes",
        "message": f"execs: 1 of 3 nodes lack map type ringbuf: kernel {RELEASE} ({node})",
    }
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase[@name='execs']/failure")
    assert failure is not None
    assert "lack map type ringbuf" in (failure.get("message") or "")
    gitlab = fleet.run("preflight", str(manifests), "-o", "gitlab")
    [issue] = json.loads(gitlab.stdout)
    assert issue["location"] == {"path": str(manifests / "execs.yaml"), "lines": {"begin": 4}}
    assert issue["severity"] == "major"
    assert set(issue) == {"description", "check_name", "fingerprint", "severity", "location"}
    assert "lack map type ringbuf" in gitlab.stderr  # the text, beside the report


def test_push_refuses_what_is_not_signed_by_a_trusted_key(
    fleet: Fleet, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    def digests() -> set[str]:
        return {
            item["digest"]
            for item in json.loads(fleet.run("artifact", "list", "-o", "json").stdout)
        }

    before = digests()
    unsigned = artifacts_of(signed_catalog, tmp_path / "unsigned", "tcplife", "tc_counter")
    (unsigned / "tcplife.manifest.json.sig").unlink()
    one_line_error(
        fleet.run("artifact", "push", str(unsigned), "--trust", str(fleet.trust)),
        ExitCode.INVALID_INPUT,
        "tcplife.bpf.o",
        "Unsigned",
        "nothing was pushed",
    )
    # Signed, but by a key the given trust store does not hold.
    stranger = tmp_path / "stranger"
    signing.generate_key_pair(stranger / "key", stranger / "key.pub")
    untrusted = tmp_path / "untrusted"
    sign_object(
        signed_catalog.files("tcplife").object, untrusted, "tcplife", "1.0.0", stranger / "key"
    )
    one_line_error(
        fleet.run(
            "artifact", "push", str(untrusted / "tcplife.bpf.o"), "--trust", str(fleet.trust)
        ),
        ExitCode.INVALID_INPUT,
        "BadSignature",
    )
    # Changed after signing.
    tampered = artifacts_of(signed_catalog, tmp_path / "tampered", "tcplife")
    with (tampered / "tcplife.bpf.o").open("ab") as stream:
        stream.write(b"\0")
    one_line_error(
        fleet.run("artifact", "push", str(tampered), "--trust", str(fleet.trust)),
        ExitCode.INVALID_INPUT,
        "modified after signing",
    )
    # No trust store at all: nothing can be verified, so nothing is pushed.
    one_line_error(
        fleet.run("artifact", "push", str(tampered)), ExitCode.CONFIGURATION, "no trust store"
    )
    assert digests() == before
    # The same artifacts, signed by the CI key the fleet trusts, go through.
    ci = tmp_path / "ci"
    sign_object(signed_catalog.files("tcplife").object, ci, "tcplife", "1.0.0", fleet.ci_key)
    env = fleet.environment(BPFLEET_TRUST=str(fleet.trust / "ci.pub"))
    done = fleet.run("artifact", "push", str(ci), env=env)
    assert done.returncode == 0, done.stderr
    assert len(digests() - before) == 1


def test_get_and_describe_show_states_with_their_reasons(
    fleet: Fleet, signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    build = artifacts_of(signed_catalog, tmp_path / "build", "execsnoop")
    assert fleet.run("artifact", "push", str(build), "--trust", str(fleet.trust)).returncode == 0
    put(
        fleet,
        "snoop",
        {
            "artifact": {"name": "execsnoop", "version": "1.0.0"},
            "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        },
    )
    waited = fleet.run("wait", "program", "snoop", "--for=ready", "--timeout=2m")
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert "snoop ready: 2/3 attached, 1 incompatible" in waited.stdout

    nodes = fleet.run("get", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.splitlines()[0].split() == [
        "NAME",
        "READY",
        "KERNEL",
        "REVISION",
        "HEARTBEAT",
    ]
    assert all(node.name in nodes.stdout for node in fleet.nodes)
    edge = json.loads(fleet.run("get", "nodes", "-l", "tier=edge,zone in (a)", "-o", "json").stdout)
    assert [node["name"] for node in edge] == [fleet.nodes[0].name]
    named = fleet.run("get", "nodes", "-l", "!zone", "-o", "name").stdout.split()
    assert named == [f"nodes/{fleet.nodes[2].name}"]
    as_yaml = yaml.safe_load(fleet.run("get", "programs", "-o", "yaml").stdout)
    assert {program["name"] for program in as_yaml} >= {"snoop"}
    programs = fleet.run("get", "programs").stdout
    assert re.search(
        r"^snoop\s+1\s+execsnoop@1\.0\.0\s+2/3\s+1\s+0\s+Succeeded 1/1$", programs, re.M
    )
    assert "Succeeded" in fleet.run("get", "rollouts").stdout
    one_line_error(fleet.run("get", "programs", "-l", "a=b"), ExitCode.USAGE, "carry no labels")
    one_line_error(fleet.run("get", "nodes", "-l", "zone in (a"), ExitCode.USAGE, "label selector")

    described = fleet.run("describe", "program", "snoop")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "Nodes:         2/3 attached, 1 incompatible, 0 failed, 0 pending" in text
    assert re.search(
        rf"{fleet.nodes[2].name}\s+1\s+Incompatible\s+\S+\s+.*kernel lacks map type ringbuf", text
    )
    assert "RolloutSucceeded" in text  # the events
    node = fleet.run("describe", "node", fleet.nodes[2].name).stdout
    assert re.search(r"map types: \d+ available; lacking: .*ringbuf", node), node
    assert re.search(r"snoop\s+1\s+Incompatible", node)
    one_line_error(
        fleet.run("describe", "program", "nope"), ExitCode.NOT_FOUND, "program nope does not exist"
    )

    # No operator reports to this fleet: no GitSources, and none to reconcile.
    listed = fleet.run("get", "gitsources")
    assert (listed.returncode, listed.stdout.strip()) == (0, "No gitsources."), listed.stderr
    one_line_error(
        fleet.run("reconcile", "gitsource", "default/fleet"),
        ExitCode.NOT_FOUND,
        "default/fleet",
    )


def test_watch_prints_rows_as_they_change(fleet: Fleet) -> None:
    process = subprocess.Popen(
        [BPFLEET, "get", "programs", "--watch", "--interval", "1s"],
        env=fleet.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split()[0] == "NAME"
        put(
            fleet,
            "watched",
            {
                "artifact": {"name": "syscount", "version": "1.0.0"},
                "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
                "nodeSelector": {"matchLabels": {"tier": "core"}},
            },
        )
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            seen.append(line)
            if line.startswith("watched") and " 1/1 " in line:
                break
        assert any(line.startswith("watched") and " 1/1 " in line for line in seen), seen
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_rollout_controls_and_waits(fleet: Fleet) -> None:
    spec = {
        "artifact": {"name": "syscount", "version": "1.0.0"},
        "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
        "config": {"target_tgid": 0},
        "rollout": {"steps": ["1", "100%"], "bakeSeconds": 0},
    }
    put(fleet, "steps", spec)
    done = fleet.run("rollout", "status", "steps", "--wait", "--timeout", "2m")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # Not a terminal: one plain line per change, ending with the last step's counts.
    assert "\r" not in done.stdout
    assert "\x1b" not in done.stdout
    assert re.match(
        r"steps: rollout \d+ Succeeded, step 2 of 2 \(3 node\(s\) updated\): 3/3 attached",
        done.stdout.strip().splitlines()[-1],
    ), done.stdout

    # Generation 2 bakes for ten minutes after its first node: pause, time out, abort.
    put(
        fleet,
        "steps",
        {
            **spec,
            "config": {"target_tgid": 1},
            "rollout": {"steps": ["1", "100%"], "bakeSeconds": 600},
        },
    )
    with fleet.client() as client:
        baking = wait_for(
            lambda: next(
                (r for r in [client.program("steps").rollout] if r and r.phase == "Baking"), None
            ),
            60,
            "the first bake",
        )
    paused = fleet.run("rollout", "pause", "steps")
    assert paused.returncode == 0, paused.stderr
    assert f"rollout {baking.id} of steps: Paused" in paused.stdout
    assert "Paused, step 1 of 2" in fleet.run("rollout", "status", "steps").stdout
    timed_out = fleet.run("wait", "program", "steps", "--for=ready", "--timeout", "3s")
    one_line_error(
        timed_out, ExitCode.TIMED_OUT, "timed out after 3s", f"steps: rollout {baking.id} Paused"
    )
    one_line_error(
        fleet.run("rollout", "status", "steps", "--wait", "--timeout", "2s"),
        ExitCode.TIMED_OUT,
        f"rollout {baking.id} of steps to end",
    )
    aborted = fleet.run("rollout", "abort", "steps", "--wait", "--timeout", "2m")
    assert aborted.returncode == 0, (aborted.stdout, aborted.stderr)
    one_line_error(
        fleet.run("rollout", "status", "steps", "--wait"), ExitCode.FOUND, "ended Aborted"
    )
    one_line_error(
        fleet.run("rollout", "resume", "steps"), ExitCode.REFUSED, "only active rollouts"
    )
    # Aborted: the program stays at generation 2 without it: never Ready again, said at once.
    one_line_error(
        fleet.run("wait", "program", "steps", "--timeout", "1m"),
        ExitCode.FOUND,
        "cannot become ready",
    )
    with fleet.client() as client:
        assert {row.generation for row in client.program_nodes("steps")} == {1}


def test_kill_asks_first(fleet: Fleet) -> None:
    put(
        fleet,
        "doomed",
        {
            "artifact": {"name": "syscount", "version": "1.0.0"},
            "attach": [{"entryPoint": "count_sys_enter", "type": "raw_tracepoint"}],
        },
    )
    one_line_error(fleet.run("kill", "doomed"), ExitCode.FOUND, "not confirmed", "--yes")
    with fleet.client() as client:
        assert not client.program("doomed").killed
    done = fleet.run("kill", "doomed", "--yes")
    assert done.returncode == 0, done.stderr
    with fleet.client() as client:
        assert client.program("doomed").killed
    assert fleet.run("wait", "program", "doomed", "--timeout", "30s").returncode == ExitCode.FOUND


def test_contexts_keep_tokens_private(fleet: Fleet, tmp_path: Path) -> None:
    ci_token = fleet.mint("ci", "pipeline")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    login = fleet.run(
        "login", fleet.api.url, "--name", "local", "--token-stdin", stdin=ci_token + "\n", env=env
    )
    assert login.returncode == 0, login.stderr
    assert "as pipeline (role ci)" in login.stdout
    config = tmp_path / "bpfleet" / "config.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(config.read_text())["current-context"] == "local"
    listed = fleet.run("context", "list", env=env)
    assert "local" in listed.stdout
    assert fleet.api.url in listed.stdout
    # The context alone is enough; the token is never shown.
    nodes = fleet.run("get", "nodes", "-o", "name", env=env)
    assert nodes.returncode == 0, nodes.stderr
    for done in (login, listed, nodes):
        assert ci_token not in done.stdout + done.stderr
    # A wrong token is refused at login, and nothing is kept.
    refused = fleet.run(
        "login", fleet.api.url, "--name", "bad", "--token-stdin", stdin="bpf_nope\n", env=env
    )
    one_line_error(refused, ExitCode.UNAUTHORIZED, "unknown, expired or revoked token")
    assert "bad" not in yaml.safe_load(config.read_text())["contexts"]
    # Environment variables override the context's fields.
    overridden = fleet.run("get", "nodes", env={**env, "BPFLEET_TOKEN": "bpf_wrong"})
    one_line_error(overridden, ExitCode.UNAUTHORIZED, "401 GET /v1/nodes")


def test_bad_input_is_one_line_with_its_own_code(fleet: Fleet, tmp_path: Path) -> None:
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "execs.yaml").write_text(program_yaml())
    # Unknown context.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "empty")}
    one_line_error(
        fleet.run("preflight", str(manifests), "--context", "prod", env=env),
        ExitCode.CONFIGURATION,
        "unknown context 'prod'",
    )
    one_line_error(fleet.run("get", "nodes", env=env), ExitCode.CONFIGURATION, "no fleet API")
    # An expired token: a browser session of one second, used after it ended.
    with httpx.Client(base_url=fleet.api.url) as http:
        opened = http.post("/v1/session", json={"token": fleet.api.admin_token})
        assert opened.status_code == 200, opened.text
        expired = opened.cookies["bpfleet_session"]
    time.sleep(1.5)
    one_line_error(
        fleet.run("preflight", str(manifests), token=expired),
        ExitCode.UNAUTHORIZED,
        "unknown, expired or revoked token",
    )
    # A token whose role may not preflight.
    viewer = fleet.mint("viewer", "watcher")
    one_line_error(
        fleet.run("preflight", str(manifests), token=viewer),
        ExitCode.FORBIDDEN,
        "role viewer may not do this",
    )
    assert fleet.run("get", "nodes", token=viewer).returncode == 0  # reading is allowed
    # Nothing listens there.
    unreachable = fleet.environment(BPFLEET_API_URL="http://127.0.0.1:9")
    one_line_error(
        fleet.run("diff", str(manifests), env=unreachable), ExitCode.UNREACHABLE, "unreachable"
    )
    # Malformed files.
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: BpfProgram\nmetadata: {name: [x\n")
    done = fleet.run("preflight", str(broken))
    assert done.returncode == ExitCode.INVALID_INPUT
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "bpfleet: 1 problem(s) in the manifests; nothing was preflighted"
    )
    bad_manifest = tmp_path / "x.manifest.json"
    bad_manifest.write_text("{}")
    one_line_error(
        fleet.run("preflight", str(bad_manifest)),
        ExitCode.INVALID_INPUT,
        "not an artifact manifest",
    )
    one_line_error(
        fleet.run("preflight", str(tmp_path / "absent")), ExitCode.INVALID_INPUT, "no such file"
    )
    one_line_error(
        fleet.run("preflight", str(manifests), "--allow-incompatible", "150%"),
        ExitCode.USAGE,
        "--allow-incompatible",
    )
    one_line_error(
        fleet.run("wait", "program", "x", "--timeout", "soon"), ExitCode.USAGE, "--timeout"
    )
