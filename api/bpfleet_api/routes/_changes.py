"""After a commit: wake the long-polls of nodes whose assignments changed."""

from __future__ import annotations

import logging

from fastapi import Request
from kombu.exceptions import OperationalError as BrokerUnavailable

from bpfleet_api import fleet, notify, tasks
from bpfleet_api.settings import get_settings

log = logging.getLogger(__name__)


def wake(request: Request, changes: fleet.Changes) -> None:
    if not changes.nodes:
        return
    request.app.state.waiters.wake(changes.nodes)
    notify.publish(get_settings().redis_url, changes.nodes)


def start_rollout(rollout_id: int | None) -> None:
    """Hand a rollout to the workers; if the broker is down, the sweeper retries."""
    if rollout_id is None:
        return
    try:
        tasks.advance_rollout.delay(rollout_id)
    except BrokerUnavailable as error:
        log.warning("rollout %s queued later: broker unavailable (%s)", rollout_id, error)
