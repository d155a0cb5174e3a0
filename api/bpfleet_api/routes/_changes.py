"""After a commit: wake the long-polls of nodes whose assignments changed, drop revoked
node credentials from every API process, hand rollouts to the workers."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import Request
from kombu.exceptions import OperationalError as BrokerUnavailable

from bpfleet_api import notify, tasks
from bpfleet_api.changes import Changes
from bpfleet_api.deps import forget_nodes
from bpfleet_api.settings import get_settings

log = logging.getLogger(__name__)


def wake(request: Request, changes: Changes) -> None:
    if not changes.nodes:
        return
    request.app.state.waiters.wake(changes.nodes)
    notify.publish(get_settings().redis_url, changes.nodes)


def revoked(request: Request, nodes: Iterable[str]) -> None:
    """Nodes' credentials were revoked: forget them here at once, and in the other API
    processes as soon as Redis tells them (their cache would trust them a while yet)."""
    names = sorted(set(nodes))
    if not names:
        return
    forget_nodes(names)
    notify.publish_revoked(get_settings().redis_url, names)


def start_rollout(rollout_id: int | None) -> None:
    """Hand a rollout to the workers; if the broker is down, the sweeper retries."""
    if rollout_id is None:
        return
    try:
        tasks.advance_rollout.delay(rollout_id)
    except BrokerUnavailable as error:
        log.warning("rollout %s queued later: broker unavailable (%s)", rollout_id, error)
