"""Celery tasks: thin shells around ``fleet`` functions. They take ids, never objects,
and are idempotent, so a redelivered or duplicated task changes nothing twice.

One task chain per rollout: a chain is a number stored with the rollout
(``fleet.new_chain``); each task carries its chain's and re-queues itself only while it
is still the rollout's. Whatever starts a chain again (a resume, the sweeper after a
broker restart, a worker starting) starts a new one, and the old one ends at its next
task: however often a rollout is re-queued, one chain advances it.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, func, select

from bpfleet_api import fleet, heartbeats, notify
from bpfleet_api.db import get_engine
from bpfleet_api.models import ACTIVE_PHASES, Node, Rollout, RolloutPhase, utcnow
from bpfleet_api.settings import get_settings

log = logging.getLogger(__name__)

settings = get_settings()
app = Celery("bpfleet", broker=settings.redis_url)
app.conf.update(
    task_acks_late=True,  # a task whose worker dies is delivered again...
    task_reject_on_worker_lost=True,  # ...instead of being lost
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)


@app.task(
    name="bpfleet.advance_rollout",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=None,
)
def advance_rollout(rollout_id: int, chain: int | None = None) -> None:
    """One tick of a rollout. Without ``chain`` (a task queued by an older API), the
    task starts a new chain."""
    if chain is None:
        start(rollout_id)
        return
    with Session(get_engine()) as session:
        fleet_size = session.exec(select(func.count()).select_from(Node)).one()
        liveness = heartbeats.liveness(fleet_size, settings)
        wait, changes = fleet.advance_rollout(
            session,
            rollout_id,
            utcnow(),
            settings.rollout_tick_seconds,
            ready_seconds=liveness.ready_seconds,
            chain=chain,
        )
        session.commit()
    notify.publish(settings.redis_url, changes.nodes)
    if wait is not None:
        advance_rollout.apply_async((rollout_id, chain), countdown=wait)


def start(rollout_id: int) -> None:
    """Start a new chain for a rollout (the previous one, if any, ends at its next task)."""
    with Session(get_engine()) as session:
        chain = fleet.new_chain(session, rollout_id)
        session.commit()
    if chain is not None:
        advance_rollout.delay(rollout_id, chain)


@worker_ready.connect
def _resume_active_rollouts(**_: object) -> None:
    """A restarted worker picks up every rollout still in motion."""
    with Session(get_engine()) as session:
        active = session.exec(
            select(Rollout.id).where(col(Rollout.phase).in_(ACTIVE_PHASES - {RolloutPhase.PAUSED}))
        ).all()
    for rollout_id in active:
        if rollout_id is not None:
            start(rollout_id)
