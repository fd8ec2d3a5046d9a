"""How a pull request event becomes the answer: queue the builds its targets' policies allow, or
record its close (issue #20, items 3 and 6).

Routing is as for pushes: the event's base repository URLs are matched against each target's
``repo`` (a payload whose URLs contradict each other is ignored), and each target answers alone.

* **A build** (``opened``, ``reopened``, ``updated``, a trusted ``labeled``): ``decide`` says
  whether, ``request_for_pull_request`` makes the request, ``enqueue`` sends it as a push's (one
  message per target, its id the request id, so Service Bus duplicate detection absorbs a
  delivery retried; 202 with ``accepted``/``ignored``). An event of a request recorded closed
  (a label added to a closed request) builds nothing. An abbreviated head commit (Bitbucket) is
  resolved by ``resolve`` when one is given; otherwise it is ignored with the reason.
* **A close** (merged or not): recorded durably, per target whose policy builds pull requests,
  in the state store (``shared.runs.pull_request_state``), and answered 200. That is all the
  webhook does: the dispatcher cancels every pending build of the request before it claims it,
  and the reconcile timer cancels a running one. A store that cannot be written answers 503, so
  the host delivers the close again (recording it twice changes nothing).
* **A fork's trust label removed** (``withdrawn_label``, under ``forks: label``): recorded as a
  close is (``record_withdrawal``), answered 200; the dispatcher and the reconcile timer cancel
  the fork builds received before it. A removal the host does not spell out (Gitea) is recorded
  only when a trust is. The request's other events are answered as before.
* **A fork's trust label added** (a ``labeled`` event ``decide`` trusts): recorded before anything
  is queued (``record_trust``, one conditional write keyed by the delivery id), which gives the
  epoch of its id; a delivery older than (or delivered again after) the last removal is refused
  with the reason and queues nothing.
* ``opened``, ``reopened`` and ``updated`` (the head moved) mark a request recorded closed as
  open again (``record_open``); their build's id then holds how many closes were recorded, and a
  fork's build how many label removals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from shared.intake.pr_policy import decide, withdrawn_label
from shared.intake.pr_routing import NotBuildable, request_for_pull_request
from shared.intake.receivers.answers import conflict_response, enqueue, load_config
from shared.intake.receivers.checks import repository_conflict
from shared.intake.receivers.pipeline import Delivery, ReceiverContext
from shared.intake.routing import Ignored, RouteResult, is_valid_ref
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target
from shared.model.events import PullRequestEvent
from shared.model.repo_urls import normalize_repo
from shared.platform.http import HttpResponse, RequestRejected
from shared.platform.logs import log_event
from shared.platform.state import StateStore
from shared.runs.pull_request_state import (
    PullRequestState,
    read_state,
    record_close,
    record_open,
    record_trust,
    record_withdrawal,
)

logger = logging.getLogger("slipway.webhooks.pull_requests")
SUBJECT = "pull-request"
# Actions that show the request is open: a request recorded closed before them is open again.
REOPENING = frozenset({"opened", "reopened", "updated"})
# (event, target, settings) -> the full head commit of an event that carries an abbreviation;
# raises ``NotBuildable`` saying why it cannot be had (``shared.intake.commit_lookup``).
Resolve = Callable[[PullRequestEvent, Target, Mapping[str, str]], str]


def targets_of(config: SlipwayConfig, repo_urls: Sequence[str]) -> list[Target]:
    """The targets whose ``repo`` is one of ``repo_urls`` (any form of it)."""
    keys = {normalize_repo(url) for url in repo_urls if url}
    return [t for t in config.targets if normalize_repo(t.repo) in keys]


def _state_unavailable(exc: Exception) -> RequestRejected:
    log_event(logger, "state_unavailable", level=logging.ERROR, error=str(exc))
    return RequestRejected(503, "state_unavailable", "the state store cannot be reached; retry later")


def answer_pull_request(
    event: PullRequestEvent,
    ctx: ReceiverContext,
    delivery: Delivery,
    *,
    resolve: Resolve | None = None,
) -> HttpResponse:
    """Queue the builds of ``event``, or record its close; the spine's answer either way.

    ``resolve`` gives the full head commit of an event that carries an abbreviation.
    """
    correlation_id = delivery.correlation_id
    prefix = f"pull request #{event.number} {event.action}: "
    if (conflict := repository_conflict(event.repo_urls)) is not None:
        return conflict_response(conflict, ctx, correlation_id=correlation_id, subject=SUBJECT)
    config = load_config(ctx)
    targets = targets_of(config, event.repo_urls)
    if not targets:
        keys = sorted({normalize_repo(u) for u in event.repo_urls if u})
        reason = f"{prefix}no target builds {keys[0] if keys else 'this repository'}"
        return conflict_response(reason, ctx, correlation_id=correlation_id, subject=SUBJECT)
    store = ctx.state() if ctx.state is not None else None
    result = RouteResult()
    for target in targets:
        if event.action == "closed":
            result.ignored.append(Ignored(target.name, prefix + _record_close(event, target, store)))
            continue
        if (label := withdrawn_label(event, target)) is not None:
            why = _record_withdrawal(event, target, label, store)
            result.ignored.append(Ignored(target.name, prefix + why))
            continue
        try:
            request = _build(event, config, target, store, ctx, correlation_id, resolve, result.notes)
        except NotBuildable as exc:
            result.ignored.append(Ignored(target.name, prefix + str(exc)))
            continue
        result.accepted.append(request)
    return enqueue(result, ctx, correlation_id=correlation_id, subject=SUBJECT)


def _record_close(event: PullRequestEvent, target: Target, store: StateStore | None) -> str:
    """Record the close for ``target``; what the answer says of it."""
    if not target.pull_requests.enabled:
        return "pull-request builds are off for this target"
    if store is None:
        return "no state store: the close is not recorded"
    try:
        state = record_close(
            store,
            target.name,
            event.number,
            at=event.received_at,
            head=event.head_commit,
            merged=event.merged,
            delivery_id=event.delivery_id,
        )
    except Exception as exc:
        raise _state_unavailable(exc) from exc
    log_event(
        logger,
        "pull_request_closed",
        target=target.name,
        number=event.number,
        merged=event.merged,
        closed_at=state.closed_at.isoformat() if state.closed_at else None,
    )
    return "recorded closed: its pending or running build is cancelled and its cache expires"


def _record_withdrawal(event: PullRequestEvent, target: Target, label: str, store: StateStore | None) -> str:
    """Record for ``target`` that the fork's trust ``label`` was removed; what the answer says."""
    if store is None:
        return f"trust withdrawn: label {label!r} removed, but no state store: it is not recorded"
    try:
        state = record_withdrawal(
            store,
            target.name,
            event.number,
            at=event.received_at,
            label=label,
            delivery_id=event.delivery_id,
            event_at=event.updated_at,
            # Gitea's label_updated/label_cleared do not say the label was there.
            only_if_trusted=event.labels_removed is None,
        )
    except Exception as exc:
        raise _state_unavailable(exc) from exc
    if state is None:
        return f"label {label!r} is not on the request and no trust of it is recorded: nothing to withdraw"
    log_event(
        logger,
        "pull_request_trust_withdrawn",
        target=target.name,
        number=event.number,
        label=label,
        withdrawals=state.withdrawals,
    )
    return f"trust withdrawn: label {label!r} removed: the fork's pending or running build is cancelled"


def _trusts(event: PullRequestEvent, target: Target) -> bool:
    """``event`` is a label a maintainer added to trust a fork's head (``decide`` said to build)."""
    return event.fork and event.action == "labeled" and target.pull_requests.forks == "label"


def _record_trust(event: PullRequestEvent, target: Target, store: StateStore) -> PullRequestState:
    """Record the trust ``event`` gives; the state it builds under. Raises ``NotBuildable`` when it
    is refused (older than, or delivered again after, the last removal of the label)."""
    try:
        verdict = record_trust(
            store,
            target.name,
            event.number,
            at=event.received_at,
            delivery_id=event.delivery_id,
            event_at=event.updated_at,
        )
    except Exception as exc:
        raise _state_unavailable(exc) from exc
    if verdict.refused is not None:
        log_event(
            logger,
            "pull_request_trust_refused",
            target=target.name,
            number=event.number,
            delivery_id=event.delivery_id,
            withdrawals=verdict.state.withdrawals,
        )
        raise NotBuildable(verdict.refused)
    return verdict.state


def _build(
    event: PullRequestEvent,
    config: SlipwayConfig,
    target: Target,
    store: StateStore | None,
    ctx: ReceiverContext,
    correlation_id: str,
    resolve: Resolve | None,
    notes: list[str],
) -> BuildRequest:
    """The request for ``target``; raises ``NotBuildable`` saying why there is none."""
    state: PullRequestState | None = None
    if store is not None and target.pull_requests.enabled and event.action in REOPENING:
        try:
            state = record_open(store, target.name, event.number, at=event.received_at)
        except Exception as exc:
            raise _state_unavailable(exc) from exc
    decision = decide(event, target)
    if not decision.build:
        raise NotBuildable(decision.reason)
    if not (is_valid_ref(event.head_ref) and is_valid_ref(event.base_ref)):
        raise NotBuildable("the head or base is not a valid Git branch name")
    trusting = store is not None and _trusts(event, target)
    received_at = event.received_at
    if store is not None and trusting:
        state = _record_trust(event, target, store)
        # A trust recorded after a removal is received after it (``trusted_received_at``).
        received_at = state.trusted_received_at(received_at)
    elif store is not None and event.action not in REOPENING:
        try:
            state = read_state(store, target.name, event.number)
        except Exception as exc:
            raise _state_unavailable(exc) from exc
    if state is not None and state.closed:
        raise NotBuildable(f"{state.closed_for(event.received_at)}; nothing is built while it is closed")
    head = event.head_commit
    if head is None:
        if resolve is None:
            raise NotBuildable(
                f"the host sent an abbreviated head commit ({event.head_commit_abbrev}) and it cannot "
                "be resolved here; nothing is built"
            )
        head = resolve(event, target, ctx.settings)
    notes.extend(f"{target.name}: {note}" for note in decision.notes if "abbreviated" not in note)
    return request_for_pull_request(
        event,
        config,
        target,
        decision,
        correlation_id=correlation_id,
        received_at=received_at,
        generation=state.closes if state is not None else 0,
        withdrawals=state.withdrawals if state is not None else 0,
        head_commit=head,
    )
