"""``bpfleet lab``: a topology built as network namespaces here, policed by the real
eBPF datapath, probed with real connections.

The ``netpol`` artifact is verified like any program the agent loads: it is looked up
in the agent's artifact directories and checked against its trusted keys
(``BPFLEET_AGENT_ARTIFACT_DIRS`` / ``BPFLEET_AGENT_TRUST``, or ``--artifacts`` /
``--trust``). From a checkout after ``make bpf``::

    bpfleet lab probe --artifacts bpf-catalog/build --trust .dev/keys \\
        --topology topology.json --protocol TCP --port 80 policies.yaml
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from bpfleet_cli.policy_commands import (
    PolicyPaths,
    PortOption,
    ProtocolOption,
    TopologyOption,
    load_policy_files,
    load_topology,
    parse_flow,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Build a topology as network namespaces and probe it through the real datapath.",
)

EXIT_UNAVAILABLE = 2  # the protocol cannot be probed on this kernel (e.g. SCTP)
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"bpfleet: {message}", err=True)
    return typer.Exit(code)


@app.command("probe")
def probe(
    *,
    topology: TopologyOption,
    port: PortOption,
    policies: PolicyPaths = None,
    protocol: ProtocolOption = "TCP",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds before an unanswered probe is blocked.")
    ] = 1.5,
    artifacts: Annotated[
        list[Path] | None,
        typer.Option("--artifacts", help="Directory with the signed netpol artifact (repeatable)."),
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="Trusted public key, or a directory of *.pub (repeatable)."),
    ] = None,
) -> None:
    """Print {"protocol", "port", "allowed": {client: {server: bool}}} as measured for real.

    Exit 2 when this kernel has no sockets for the protocol (SCTP here): nothing is
    built and nothing is guessed.
    """
    from bpfleet_agent import datapath, lab
    from bpfleet_agent.settings import AgentSettings
    from bpfleet_core import signing
    from bpfleet_core.netpol import compiling

    checked = parse_flow(protocol, port)
    try:
        lab.check_protocol(checked)
    except lab.ProtocolUnavailable as error:
        raise _fail(str(error), EXIT_UNAVAILABLE) from error
    if os.geteuid() != 0:
        raise _fail("the lab needs root: it creates namespaces and loads eBPF programs")
    world = load_topology(topology)
    rules = compiling.compile_policies(load_policy_files(policies), world)
    order = world.pod_order()
    try:
        # From here on SIGTERM/SIGHUP unwind like Ctrl-C, so the lab is always removed.
        with lab.signals_raise():
            settings = AgentSettings()
            source = lab.ArtifactSource(
                artifact_dirs=artifacts or settings.artifact_dirs,
                trust=signing.TrustStore.from_paths(trust or settings.trust),
                report=lab.node_features(settings),
            )
            with lab.PolicyLab({key: world.pods[key].ip for key in order}, source) as running:
                running.enforce(rules)
                allowed = running.probe(checked, port, timeout)
    except KeyboardInterrupt as interrupted:
        raise _fail("interrupted; the lab was removed", EXIT_INTERRUPTED) from interrupted
    except (lab.LabError, datapath.DatapathError, OSError) as error:
        raise _fail(str(error)) from error
    ordered = {client: {server: allowed[client][server] for server in order} for client in order}
    typer.echo(json.dumps({"protocol": checked, "port": port, "allowed": ordered}))


@app.command("clean")
def clean() -> None:
    """Remove namespaces and pins that killed lab runs left behind."""
    from bpfleet_agent import lab

    for removed in lab.clean_stale():
        typer.echo(f"removed {removed}")
