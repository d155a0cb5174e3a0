"""Runs the kopf operator: its settings, how it logs in, and the push receiver."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from bpfleet_operator import fleetapi, handlers, kube, proposer, webhooks
from bpfleet_operator.context import Context
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
_settings = OperatorSettings()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if _settings.kube_url is not None:
        return kopf.ConnectionInfo(server=_settings.kube_url)
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress and the diff base go in annotations under our own prefix, so the
    # status stays exactly the schema the CRD declares.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bpfleet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="bpfleet.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "bpfleet.io/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30


def run(settings: OperatorSettings | None = None, stop: threading.Event | None = None) -> None:
    """Run until stopped (SIGINT/SIGTERM, or ``stop``)."""
    global _settings  # noqa: PLW0603 - kopf's login handler is module-level by design
    _settings = settings or OperatorSettings()
    context = Context(
        settings=_settings,
        api=FleetApi.from_settings(_settings),
        kube=kube.Kube(kube.connect(_settings.kube_url), _settings.kube_timeout_seconds),
    )
    receiver = None
    if _settings.webhook_port:
        receiver = webhooks.Receiver(
            _settings.receiver_host(standalone=False),
            _settings.webhook_port,
            context.webhook_secret,
            context.wake,
            connections=_settings.webhook_connections,
            timeout=_settings.webhook_timeout_seconds,
        ).start()
        log.info(
            "push notifications: POST :%d%s<namespace>/<name>", receiver.port, webhooks.PATH_PREFIX
        )
    # "Reconcile now" from the dashboard wakes the source's daemon, as a push does.
    requests_stop = threading.Event()
    threading.Thread(
        target=fleetapi.follow_reconcile_requests,
        args=(
            FleetApi.from_settings(_settings),
            context.wake,
            requests_stop,
        ),
        name="reconcile-requests",
        daemon=True,
    ).start()
    # Proposals: written to Git by this operator, tracked after each pass of their source.
    proposals_api = FleetApi(_settings.api_url, _settings.api_token.get_secret_value())
    context.proposals = proposer.Proposer(
        _settings,
        proposals_api,
        context.access,
        lambda source: context.wake(source.namespace, source.name),
        standalone=False,
    )
    threading.Thread(
        target=fleetapi.follow_proposals,
        args=(proposals_api, context.proposals.handle, requests_stop),
        name="proposals",
        daemon=True,
    ).start()
    stop_flag: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop_flag
        stop_flag = asyncio.Event()
        if stop is not None:
            loop = asyncio.get_running_loop()
            threading.Thread(
                target=lambda: (stop.wait(), loop.call_soon_threadsafe(stop_flag.set)),
                daemon=True,
            ).start()
        await kopf.operator(clusterwide=True, standalone=True, memo=context, stop_flag=stop_flag)

    _ = handlers  # imported for its decorators
    resyncing = threading.Event()
    threading.Thread(
        target=context.mirror.run,
        args=(resyncing, _settings.resync_seconds),
        name="fleet-resync",
        daemon=True,
    ).start()
    try:
        asyncio.run(main())
    finally:
        resyncing.set()
        requests_stop.set()
        if receiver is not None:
            receiver.stop()
        context.api.close()
        proposals_api.close()
