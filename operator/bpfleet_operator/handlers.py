"""kopf handlers: thin shells that route each event to the pipeline or the fleet API.

- ``GitSource``: a daemon per object runs ``gitsource.reconcile`` every interval, or at
  once when a push notification or a spec change wakes it; after each pass the source's
  pushed proposals are followed into the tracked branch and the fleet.
- ``BpfProgram`` and ``NetworkPolicy``: create/update/resume hand the spec to the
  fleet API; a timer keeps the summary status in step with the API; deletion waits
  (finalizer) until no reachable node still runs the program or enforces the policy
  (an Unknown node, silent past its window, does not hold a deletion forever).
- ``Node``, ``Namespace``, ``Pod``: what Kubernetes knows is mirrored to the fleet API
  (``mirror``): node labels (so selectors mean the same in both) and pod CIDRs,
  namespace labels, and each node's workloads (an index of running pods by node).
  The mirror's own resync loop (started by ``cluster``) pushes again what the API
  lacks: kopf timers on Nodes and Namespaces would put a finalizer on every one.

Failures are the classes of ``bpfleet_core.failures`` and decide what happens:
``kopf.TemporaryError`` (retried with a delay) for a ``TemporaryFailure`` (the API or
the cluster is unreachable), ``kopf.PermanentError`` plus a ``Stalled`` condition for a
``PermanentFailure`` (the object itself must change).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from bpfleet_core import failures
from bpfleet_core.netpol import validating
from bpfleet_core.proposals import SourceKey
from bpfleet_core.resources import (
    API_GROUP,
    API_VERSION,
    BpfProgramSpec,
    BpfProgramStatus,
    Condition,
    GitSourceSpec,
    GitSourceStatus,
    NetworkPolicyStatus,
    SourceFile,
    parse_duration,
)
from bpfleet_operator import git, gitsource, kube, standalone, statuses, workloads
from bpfleet_operator.context import Context

log = logging.getLogger(__name__)
PROGRAMS = (API_GROUP, API_VERSION, "bpfprograms")
POLICIES = (API_GROUP, API_VERSION, "networkpolicies")
SOURCES = (API_GROUP, API_VERSION, "gitsources")
WAKE_POLL_SECONDS = 0.5
MAX_RETRY_DELAY = 60.0
# A finalizer polls once a second while nodes detach, and kopf counts each poll as a
# retry: backing off by that count would turn one API hiccup late in a long detach into
# a minute's wait, so its failures back off no further than this.
MAX_FINALIZER_RETRY_DELAY = 8.0
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _generation(meta: kopf.Meta) -> int | None:
    value = meta.get("generation")
    return int(value) if value is not None else None


def _revision(meta: kopf.Meta) -> str:
    return str(meta.get("annotations", {}).get(kube.REVISION_ANNOTATION, ""))


def retry_later(
    message: str, retry: int = 0, longest: float = MAX_RETRY_DELAY
) -> kopf.TemporaryError:
    """Exponential backoff: 1 s, 2 s, 4 s ... up to ``longest`` (a minute) between attempts."""
    return kopf.TemporaryError(message, delay=min(2.0**retry, longest))


def _set_conditions(patch: kopf.Patch, conditions: tuple[Any, ...]) -> None:
    patch.status["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in conditions]


def _fleet_failure(
    error: failures.Failure, patch: kopf.Patch, previous: Any, meta: kopf.Meta, retry: int
) -> Exception:
    """Sort an API failure: Stalled + PermanentError, or a retry with backoff."""
    if isinstance(error, failures.TemporaryFailure):
        return retry_later(error.message, retry)
    message = error.message + (f": {'; '.join(error.problems)}" if error.problems else "")
    _set_conditions(
        patch, statuses.stalled(previous, _now(), _generation(meta), "Rejected", message)
    )
    patch.status["observedGeneration"] = _generation(meta)
    return kopf.PermanentError(message)


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json", by_alias=True, exclude_none=True))


def _known(model: type[Any], status: kopf.Status) -> Any:
    """Our part of the status (kopf may keep its own keys next to it)."""
    fields = {field.alias or name for name, field in model.model_fields.items()}
    return model.model_validate({k: v for k, v in dict(status).items() if k in fields})


# ----------------------------------------------- what BpfProgram and NetworkPolicy share


def _hand_over(
    parse: Callable[[], T],
    put: Callable[[T], dict[str, Any]],
    *,
    patch: kopf.Patch,
    meta: kopf.Meta,
    previous: tuple[Condition, ...],
    retry: int,
) -> None:
    """Validate, give the fleet API the desired state, and say so in the status."""
    generation = _generation(meta)
    try:
        parsed = parse()
    except (ValidationError, validating.PolicyValidationError) as error:
        _set_conditions(
            patch, statuses.stalled(previous, _now(), generation, "InvalidSpec", str(error))
        )
        raise kopf.PermanentError(f"invalid spec: {error}") from None
    try:
        view = put(parsed)
    except failures.Failure as error:
        raise _fleet_failure(error, patch, previous, meta, retry) from None
    message = f"generation {view['generation']} handed to the fleet"
    _set_conditions(
        patch, statuses.progressing(previous, _now(), generation, message, ready="Unknown")
    )
    patch.status["observedGeneration"] = generation
    patch.status["revision"] = _revision(meta)


def _follow(
    get: Callable[[], dict[str, Any] | None],
    summarize: Callable[[dict[str, Any], Any], Any],
    previous: Any,
    *,
    patch: kopf.Patch,
    body: kopf.Body,
    kind: str,
) -> None:
    """One status tick: the fleet's view -> summary status, written only if it changed."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        view = get()
    except failures.Failure as error:
        log.warning("%s: status not refreshed: %s", kind, error.message)
        return  # the next tick tries again
    if view is None:
        return  # not handed over yet (or refused): the create/update handler owns that
    _patch_if_changed(patch, body, previous, summarize(view, previous), kind)


def _remove(
    delete: Callable[[], None], remaining: Callable[[], list[dict[str, Any]]], retry: int
) -> None:
    """The finalizer: ask the fleet to remove it, then wait until no reachable node has
    it. A node the fleet calls Unknown (silent past its unknown window, say a dead one)
    is not waited for: it removes the program or policy when it comes back."""
    try:
        delete()
        rows = remaining()
    except failures.Failure as error:
        raise retry_later(error.message, retry, MAX_FINALIZER_RETRY_DELAY) from None
    nodes = [row["node"] for row in rows if row.get("readiness") != "Unknown"]
    if nodes:
        raise kopf.TemporaryError(f"still on {', '.join(nodes)}", delay=1)
    gone = [row["node"] for row in rows if row.get("readiness") == "Unknown"]
    if gone:
        log.info("removed; not waiting for %d unreachable node(s): %s", len(gone), ", ".join(gone))


# ---------------------------------------------------------------------- BpfProgram


@kopf.on.resume(*PROGRAMS)
@kopf.on.create(*PROGRAMS)
@kopf.on.update(*PROGRAMS)
def program_submitted(
    *,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    retry: int,
    memo: Context,
    **_: Any,
) -> None:
    _hand_over(
        lambda: BpfProgramSpec.model_validate(dict(spec)),
        lambda parsed: memo.api.put_program(name, parsed),
        patch=patch,
        meta=meta,
        previous=_known(BpfProgramStatus, status).conditions,
        retry=retry,
    )


@kopf.timer(*PROGRAMS, interval=2.0, initial_delay=1.0)
def program_status(
    *, name: str, body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
    memo: Context, **_: Any,
) -> None:  # fmt: skip
    _follow(
        lambda: memo.api.get_program(name),
        lambda view, previous: statuses.program_status(
            view, previous, _now(), _generation(meta), _revision(meta)
        ),
        _known(BpfProgramStatus, status),
        patch=patch,
        body=body,
        kind=f"BpfProgram {name}",
    )


@kopf.on.delete(*PROGRAMS)
def program_deleted(*, name: str, retry: int, memo: Context, **_: Any) -> None:
    _remove(lambda: memo.api.delete_program(name), lambda: memo.api.program_nodes(name), retry)


# ------------------------------------------------------------------- NetworkPolicy


def _policy_body(name: str, namespace: str, spec: kopf.Spec) -> dict[str, Any]:
    """The object as a policy document, validated and normalised (CIDRs) for the API."""
    document = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }
    policy = validating.validate(document).policy
    return dict(policy.model_dump(mode="json", by_alias=True, exclude_none=True))


@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
def policy_submitted(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    retry: int,
    memo: Context,
    **_: Any,
) -> None:
    _hand_over(
        lambda: _policy_body(name, namespace or "default", spec),
        memo.api.put_policy,
        patch=patch,
        meta=meta,
        previous=_known(NetworkPolicyStatus, status).conditions,
        retry=retry,
    )


@kopf.timer(*POLICIES, interval=2.0, initial_delay=1.0)
def policy_status(
    *, name: str, namespace: str | None, body: kopf.Body, meta: kopf.Meta, status: kopf.Status,
    patch: kopf.Patch, memo: Context, **_: Any,
) -> None:  # fmt: skip
    _follow(
        lambda: memo.api.get_policy(namespace or "default", name),
        lambda view, previous: statuses.policy_status(
            view, previous, _now(), _generation(meta), _revision(meta)
        ),
        _known(NetworkPolicyStatus, status),
        patch=patch,
        body=body,
        kind=f"NetworkPolicy {namespace}/{name}",
    )


@kopf.on.delete(*POLICIES)
def policy_deleted(
    *, name: str, namespace: str | None, retry: int, memo: Context, **_: Any
) -> None:
    ns = namespace or "default"
    _remove(
        lambda: memo.api.delete_policy(ns, name), lambda: memo.api.policy_nodes(ns, name), retry
    )


def _patch_if_changed(
    patch: kopf.Patch, body: kopf.Body, previous: Any, updated: Any, kind: str
) -> None:
    """Debounce: write only what changed; post an Event when Ready changes."""
    if _dump(updated) == _dump(previous):
        return
    for key, value in _dump(updated).items():
        patch.status[key] = value
    before = {c.type: c for c in previous.conditions}.get("Ready")
    after = {c.type: c for c in updated.conditions}.get("Ready")
    if after is None or (before and (before.status, before.reason) == (after.status, after.reason)):
        return
    log.info("%s: %s: %s", kind, after.reason, after.message)
    if after.status == "True":
        kopf.info(body, reason=after.reason, message=after.message)
    else:
        kopf.warn(body, reason=after.reason, message=after.message)


# ------------------------------------------------------------------------ GitSource


@kopf.on.update(*SOURCES, field="spec")
def source_changed(*, name: str, namespace: str | None, memo: Context, **_: Any) -> None:
    memo.wake(namespace or "default", name)


@kopf.on.delete(*SOURCES)
def source_deleted(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    retry: int,
    memo: Context,
    **_: Any,
) -> None:
    """Like Flux: a deleted source with prune on takes what it applied with it."""
    key = f"{namespace or 'default'}/{name}"
    memo.sources.pop((namespace or "default", name), None)
    try:
        memo.api.forget_source(namespace or "default", name)
    except failures.Failure as error:  # the dashboard keeps showing it; nothing else depends
        log.warning("GitSource %s: not forgotten by the fleet: %s", key, error.message)
    if not spec.get("prune", True):
        return
    target = kube.KubeTarget(memo.kube)
    for entry in _known(GitSourceStatus, status).inventory:
        try:
            target.delete(entry, key)
        except failures.Failure as error:
            raise retry_later(f"pruning {entry.key}: {error}", retry) from None


@kopf.daemon(*SOURCES, cancellation_timeout=10.0)
def source_daemon(
    *,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Context,
    **_: Any,
) -> None:
    """Fetch, validate, apply, prune; then sleep until the interval ends or a wake-up."""
    namespace = namespace or "default"
    key = f"{namespace}/{name}"
    wake = memo.waker(namespace, name)
    checkout: git.Checkout | None = None

    def one_pass() -> tuple[bool, float]:
        nonlocal checkout
        generation = _generation(body.get("metadata", {}))
        status = _known(GitSourceStatus, body.get("status", {}))
        try:
            spec = GitSourceSpec.model_validate(dict(body.get("spec", {})))
        except ValidationError as error:
            found = statuses.stalled(
                status.conditions, _now(), generation, "InvalidSpec", str(error)
            )
            _write_source_status(
                memo, namespace, name, status.model_copy(update={"conditions": found})
            )
            return False, 3600.0  # until the spec changes (which wakes the daemon)
        memo.sources[(namespace, name)] = spec
        interval = parse_duration(spec.interval)
        try:
            credentials = memo.credentials(namespace, spec)
        except failures.Failure as error:
            stalled = ("SecretFailed", str(error)) if not error.temporary else None
            found = statuses.conditions(
                status.conditions,
                _now(),
                generation,
                ready=("False", "SecretFailed", str(error)),
                stalled=stalled,
            )
            _write_source_status(
                memo, namespace, name, status.model_copy(update={"conditions": found}), spec
            )
            return True, interval  # a Secret changes without waking anyone: look again
        if checkout is None or checkout.url != spec.url or checkout.credentials != credentials:
            checkout = git.Checkout(
                spec.url,
                memo.settings.state_dir / namespace / name,
                credentials,
                allow_local=memo.settings.allows_local_sources(standalone=False),
                state_dir=memo.settings.state_dir,
            )
        result = gitsource.reconcile(
            spec,
            status,
            checkout,
            kube.KubeTarget(memo.kube),
            source=key,
            now=_now(),
            generation=generation,
            check_program=standalone.program_check(memo.api),
            scope=memo.scope(namespace),
        )
        _write_source_status(memo, namespace, name, result.status, spec, texts=result.files)
        if memo.proposals is not None:
            memo.proposals.track(SourceKey(namespace=namespace, name=name), checkout, result)
        if result.outcome != "Suspended" and result.message != memo.last_message.get(key):
            memo.last_message[key] = result.message
            kind = "Normal" if result.outcome == "Applied" else "Warning"
            kopf.event(body, type=kind, reason=result.outcome, message=result.message[:1000])
        log.info("GitSource %s: %s", key, result.message)
        return result.outcome == "Failed", interval

    gitsource.follow(
        one_pass,
        first_retry=memo.settings.retry_seconds,
        sleep=lambda seconds: _sleep(wake, stopped, seconds),
        stopped=lambda: bool(stopped),
    )


def _write_source_status(
    memo: Context,
    namespace: str,
    name: str,
    status: GitSourceStatus,
    spec: GitSourceSpec | None = None,
    *,
    texts: tuple[SourceFile, ...] = (),
) -> None:
    """The pass's end: the status on the object, and to the fleet API for the dashboard
    (with the files the policy editor opens)."""
    try:
        memo.kube.patch_status("gitsources", namespace, name, _dump(status))
    except failures.Failure as error:
        log.warning("GitSource %s/%s: %s", namespace, name, error)
    try:
        memo.api.report_source(namespace, name, spec, status, texts)
    except failures.Failure as error:
        log.warning("GitSource %s/%s: status not reported: %s", namespace, name, error.message)


def _sleep(wake: threading.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    waited = 0.0
    while waited < seconds and not stopped and not wake.is_set():
        wake.wait(min(WAKE_POLL_SECONDS, seconds - waited))
        waited += WAKE_POLL_SECONDS
    wake.clear()


# ----------------------------------------------- Kubernetes mirrored to the fleet API


@kopf.index("", "v1", "pods")
def workloads_by_node(*, body: kopf.Body, **_: Any) -> dict[str, workloads.Workload] | None:
    """Running pods with an IP of their own, by the node they run on. kopf fills the
    index from a full listing before any handler runs, so no node's list is ever pushed
    half-known."""
    found = workloads.workload(body)
    return {found.node: found} if found is not None else None


def _node_workloads(handler_kwargs: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The node's workloads from the index kopf passes every handler by its name."""
    index: kopf.Index[str, workloads.Workload] = handler_kwargs["workloads_by_node"]
    return workloads.as_body(index.get(node, []))


@kopf.on.event("", "v1", "pods")
def pod_changed(*, body: kopf.Body, memo: Context, **kwargs: Any) -> None:
    node = (body.get("spec") or {}).get("nodeName")
    if node:
        memo.mirror.node(node, workloads=_node_workloads(kwargs, node))


@kopf.on.event("", "v1", "nodes")
def node_changed(*, event: kopf.RawEvent, memo: Context, **kwargs: Any) -> None:
    node = event["object"]
    name = node["metadata"]["name"]
    if event["type"] == "DELETED":
        memo.mirror.node_gone(name)
        return
    memo.mirror.node(
        name,
        labels=dict(node["metadata"].get("labels") or {}),
        pod_cidrs=workloads.pod_cidrs(node),
        workloads=_node_workloads(kwargs, name),
    )


@kopf.on.event("", "v1", "namespaces")
def namespace_changed(*, event: kopf.RawEvent, memo: Context, **_: Any) -> None:
    namespace = event["object"]
    name = namespace["metadata"]["name"]
    if event["type"] == "DELETED":
        memo.mirror.namespace_gone(name)
    else:
        memo.mirror.namespace(name, namespace["metadata"].get("labels") or {})
