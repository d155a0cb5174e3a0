"""``bpfleet``: one command, a sub-command per area (node, agent, catalog, keys)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError

from bpfleet_cli import catalog_commands

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
node_app = typer.Typer(no_args_is_help=True, help="This node: what its kernel can do.")
agent_app = typer.Typer(no_args_is_help=True, help="The node agent.")
app.add_typer(node_app, name="node")
app.add_typer(agent_app, name="agent")
app.add_typer(catalog_commands.app, name="catalog")
app.add_typer(catalog_commands.keys_app, name="keys")


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
    from bpfleet_agent.settings import AgentSettings

    try:
        settings = AgentSettings()
    except ValidationError as error:
        raise fail(f"agent settings: {daemon.describe_validation_error(error)}") from error
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
    """Show what the agent last reported for each program."""
    from bpfleet_agent.settings import AgentSettings

    path = AgentSettings().status_file
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise fail(f"no agent status at {path}: {error.strerror}") from error
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    if document.get("error"):
        typer.echo(f"error: {document['error']}")
    for program in document["programs"]:
        typer.echo(
            f"{program['name']:<24} {program['state']:<18} "
            f"{program.get('reason', '')} {program.get('message', '')}"
        )


def run() -> None:
    """Entry point that turns unexpected YAML/OS errors into one line, not a traceback."""
    try:
        app()
    except (OSError, yaml.YAMLError) as error:
        typer.echo(f"bpfleet: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
