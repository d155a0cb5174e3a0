"""``bpfleet``: one command, a sub-command per area. On this node: node, agent, catalog,
keys, policy, lab, local, operator. Against the fleet API, for CI and operations: login,
context, artifact, validate, preflight, diff, get, describe, rollout, kill, wait,
reconcile, propose."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError

from bpfleet_cli import (
    artifact_commands,
    catalog_commands,
    check_commands,
    context_commands,
    diff_commands,
    exits,
    get_commands,
    gitops_commands,
    lab_commands,
    local_commands,
    policy_commands,
    proposal_commands,
    rollout_commands,
)
from bpfleet_core import failures
from bpfleet_core.signing import SignatureError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help=__doc__,
    epilog=exits.HELP,
)
node_app = typer.Typer(no_args_is_help=True, help="This node: what its kernel can do.")
agent_app = typer.Typer(no_args_is_help=True, help="The node agent.")
app.add_typer(node_app, name="node")
app.add_typer(agent_app, name="agent")
app.add_typer(catalog_commands.app, name="catalog")
app.add_typer(catalog_commands.keys_app, name="keys")
app.add_typer(local_commands.app, name="local")
app.add_typer(policy_commands.app, name="policy")
app.add_typer(lab_commands.app, name="lab")
app.add_typer(gitops_commands.app, name="operator")
# The fleet commands: over the public API only (``client``), exit codes in ``exits``.
app.command("login", epilog=exits.HELP)(context_commands.login)
app.add_typer(context_commands.app, name="context")
app.add_typer(artifact_commands.app, name="artifact", epilog=exits.HELP)
for name, command in (
    ("validate", check_commands.validate),
    ("preflight", check_commands.preflight),
    ("diff", diff_commands.diff),
    ("get", get_commands.get),
    ("describe", get_commands.describe),
    ("kill", rollout_commands.kill),
    ("wait", rollout_commands.wait),
    ("propose", proposal_commands.propose),
):
    app.command(name, epilog=exits.HELP)(command)
app.add_typer(rollout_commands.rollout_app, name="rollout", epilog=exits.HELP)
app.add_typer(rollout_commands.reconcile_app, name="reconcile", epilog=exits.HELP)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"bpfleet: {message}", err=True)
    return typer.Exit(code)


@node_app.command("features")
def node_features(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Probe this node's kernel for real and print its eBPF feature report."""
    from bpfleet_agent import loading, mounts, probing
    from bpfleet_agent.settings import AgentSettings

    settings = AgentSettings()
    mounts.ensure_bpffs(settings.pin_root)
    kernel = loading.Kernel(settings.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2())
    report = probing.probe(
        settings.node_name, settings.pin_root, kernel.tracefs, kernel.cgroup_root
    )
    if as_json:
        typer.echo(report.to_json())
        return
    typer.echo(
        f"node {report.node}: Linux {report.kernel_release} ({report.arch}), "
        f"libbpf {report.libbpf_version}"
    )
    typer.echo(
        f"  kernel BTF: {report.kernel_btf}  JIT: {report.jit_enabled}  "
        f"bpffs: {report.bpffs}  stats: {report.bpf_stats}"
    )
    for title, table in (
        ("program types", report.program_types),
        ("map types", report.map_types),
        ("attach", report.attach_kinds),
    ):
        missing = sorted(str(name) for name, ok in table.items() if not ok)
        typer.echo(
            f"  {title}: {sum(table.values())} available; lacking: {', '.join(missing) or 'none'}"
        )
    typer.echo(f"  kfuncs: {len(report.kfuncs)}")


@agent_app.command("run")
def agent_run(
    once: Annotated[bool, typer.Option(help="Reconcile once, print the report and exit.")] = False,
) -> None:
    """Run the agent against its local desired-state file (settings: BPFLEET_AGENT_*)."""
    from bpfleet_agent import daemon
    from bpfleet_agent.desired import describe_validation_error
    from bpfleet_agent.settings import AgentSettings

    try:
        settings = AgentSettings()
    except ValidationError as error:
        raise fail(f"agent settings: {describe_validation_error(error)}") from error
    except SettingsError as error:
        raise fail(f"agent settings: {error}") from error
    if not once:
        daemon.main()
        return
    report = daemon.Agent(settings).reconcile_file(settings.desired_state)
    typer.echo(report.model_dump_json(by_alias=True, indent=2))


@agent_app.command("status")
def agent_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status document.")] = False,
) -> None:
    """Show what the agent last reported for each program, and its network policies."""
    from bpfleet_agent.settings import AgentSettings

    path = AgentSettings().status_file
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise fail(f"no agent status at {path}: {error.strerror}") from error
    except ValueError as error:  # a torn or corrupt file
        raise fail(f"agent status at {path} is not valid JSON: {error}") from error
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    try:
        if document.get("error"):
            typer.echo(f"error: {document['error']}")
        for program in document["programs"]:
            typer.echo(
                f"{program['name']:<24} {program['state']:<18} "
                f"{program.get('reason', '')} {program.get('message', '')}"
            )
        policy = document.get("policy")
        if policy:
            enforced = ", ".join(policy.get("policies", [])) or "no policy"
            typer.echo(
                f"{'network policies':<24} {policy['state']:<18} {enforced} "
                f"{policy.get('message', '')}".rstrip()
            )
    except (AttributeError, KeyError, TypeError) as error:
        raise fail(f"agent status at {path} is not a status document ({error!r})") from error


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Failures with a message of their own: the message is the report, not a traceback.
    (Evaluated only when an exception is being matched, so the agent is imported late.)"""
    from bpfleet_agent.probing import ProbeError

    return (
        OSError,
        yaml.YAMLError,
        SignatureError,
        ProbeError,
        subprocess.TimeoutExpired,
        SettingsError,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())  # one line, whatever the error's own layout


def run() -> None:
    """Entry point that turns expected failures into one line on stderr, not a traceback:
    the fleet commands' with the exit code of their kind (``exits``), files, keys, probes
    and settings with exit status 1."""
    try:
        app()
    except exits.CommandError as error:
        typer.echo(f"bpfleet: {_one_line(error.message)}", err=True)
        sys.exit(error.code)
    except failures.Failure as failure:
        typer.echo(f"bpfleet: {_one_line(failure.message)}", err=True)
        sys.exit(exits.for_failure(failure))
    except ValidationError as error:
        from bpfleet_agent.desired import describe_validation_error

        typer.echo(f"bpfleet: invalid {error.title}: {describe_validation_error(error)}", err=True)
        sys.exit(1)
    except _one_line_errors() as error:
        typer.echo(f"bpfleet: {_one_line(str(error))}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
