"""Base-image rebuilds: which targets build on a pushed image, and what each of them rebuilds.

Every registry receiver (ACR webhooks, Event Grid, Docker Hub) normalises into an
``ImagePushedEvent`` and calls ``route_image_pushes``, so matching and fan-out behave the same
whichever sender reported the push.

* **Which targets.** Those whose ``base_images`` name the pushed image: same registry and
  repository after Docker's normalisation, and the same tag, or the same digest for a
  reference pinned by digest.
* **Only tagged pushes.** A multi-arch push sends one event per platform manifest (and per
  attestation), all without a tag, before the tagged push of the index. Acting on those would
  rebuild every dependent once per platform, so an untagged push never triggers anything; the
  tagged push that follows does, once.
* **What is rebuilt.** The commit the target last built on its default branch, as the
  dispatcher recorded it, because that is what is deployed. When no build is recorded yet, the
  head of the default branch (``source.commit`` null, trigger ``base-image``).
* **Idempotent.** A rebuild's id adds the trigger kind, the image and the update's identity (its
  digest; when the sender reports none, its push time) to the usual target, ref, commit and
  platforms. The same update delivered twice (Event Grid is at-least-once) is the same request,
  which duplicate detection and the ledger absorb; it never collides with the push build of the
  same commit.
* **Spread, never dropped.** Beyond ``rebuilds.max_burst`` requests in one delivery, each further
  group of ``max_burst`` is scheduled ``rebuilds.spread_seconds`` after the previous one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache

from shared.intake.routing import Ignored, NoImageTags, RouteResult, request_for_commit
from shared.model.build_request import BuildRequest, Trigger
from shared.model.config import RebuildSettings, SlipwayConfig, Target
from shared.model.default_branch import default_branch_for
from shared.model.events import ImagePushedEvent
from shared.model.globs import any_match
from shared.model.image_refs import ImageReference, parse_image_reference
from shared.model.repo_urls import https_clone_url, normalize_repo
from shared.runs.last_build import LastBuild

LastBuildLookup = Callable[[str], LastBuild | None]


@dataclass
class ImageRouteResult(RouteResult):
    """A ``RouteResult`` whose requests may be scheduled: request id → when it becomes receivable."""

    scheduled: dict[str, datetime] = field(default_factory=dict)


@lru_cache(maxsize=1024)
def _reference(text: str) -> ImageReference:
    return parse_image_reference(text)


def builds_on(target: Target, event: ImagePushedEvent) -> bool:
    """True when one of the target's base images is the pushed image."""
    for text in target.base_images:
        reference = _reference(text)
        if reference.registry != event.registry or reference.repository != event.repository:
            continue
        if reference.digest is not None:
            if event.digest == reference.digest:
                return True
        elif event.tag is not None and event.tag == reference.tag:
            return True
    return False


def default_branch_of(target: Target, last: LastBuild | None = None) -> str | None:
    """The branch a target's rebuilds build: ``default_branch_for`` with the recorded last build's
    default as the reported one (no sender reports anything to a rebuild)."""
    return default_branch_for(target, last.reported_default if last is not None else None)


def _usable(last: LastBuild | None, target: Target) -> LastBuild | None:
    """A record still describing this target: same repository, the default branch, a wanted branch."""
    if last is None:
        return None
    if normalize_repo(last.repo_url) != normalize_repo(target.repo):
        return None
    if last.branch is None or last.branch != default_branch_of(target, last):
        return None
    if not any_match(target.branches, last.branch):
        return None
    return last


def _route_one(
    event: ImagePushedEvent,
    config: SlipwayConfig,
    *,
    last_builds: LastBuildLookup,
    correlation_id: str,
) -> RouteResult:
    result = RouteResult()
    if event.tag is None:
        result.ignored.append(
            Ignored(
                None,
                f"untagged push of {event.image}@{event.digest or '?'} (a platform manifest or attestation "
                "of a multi-arch image): only the tagged push triggers rebuilds",
            )
        )
        return result
    dependents = [t for t in config.targets if builds_on(t, event)]
    if not dependents:
        result.ignored.append(Ignored(None, f"no target builds on {event.image}"))
        return result
    update_key = event.update_key
    if update_key is None:
        result.ignored.append(
            Ignored(None, f"{event.image}: the sender gave no digest, time or id to tell this update apart")
        )
        return result
    trigger = Trigger(
        kind="base-image",
        provider=event.provider,
        delivery_id=event.delivery_id,
        received_at=event.received_at,
        correlation_id=correlation_id,
    )
    for target in dependents:
        request = rebuild_request(
            config,
            target,
            last=last_builds(target.name),
            trigger=trigger,
            id_parts=("base-image", event.image, update_key),
            result=result,
        )
        if request is not None:
            result.accepted.append(request)
    return result


def rebuild_request(
    config: SlipwayConfig,
    target: Target,
    *,
    last: LastBuild | None,
    trigger: Trigger,
    id_parts: tuple[str, ...],
    result: RouteResult,
) -> BuildRequest | None:
    """The request rebuilding what ``target`` deploys: its last default-branch build, else that
    branch's head. Base-image and scheduled rebuilds share this rule.

    None when there is nothing to build; the reason is then in ``result.ignored`` (a head build
    adds a note).
    """
    usable = _usable(last, target)
    if usable is not None:
        ref, commit, repo_url = usable.ref, usable.commit, usable.repo_url
        default = default_branch_of(target, usable)
    else:
        branch = default_branch_of(target)
        if branch is None:
            result.ignored.append(
                Ignored(
                    target.name,
                    "no build of its default branch is recorded, and it has neither default_branch "
                    "nor exactly one plain-name branch filter to tell which branch that is: set "
                    "default_branch on the target",
                )
            )
            return None
        ref, commit, default = f"refs/heads/{branch}", None, branch
        repo_url = https_clone_url(target.repo)
        result.notes.append(f"{target.name}: no build of {branch} is recorded yet; rebuilding its head")
    try:
        return request_for_commit(
            config,
            target,
            ref=ref,
            commit=commit,
            repo_url=repo_url,
            trigger=trigger,
            default_branch=default,
            id_parts=id_parts,
        )
    except NoImageTags:
        result.ignored.append(Ignored(target.name, "no image tag rule applies to this ref"))
        return None


def spread(requests: Sequence[BuildRequest], settings: RebuildSettings, now: datetime) -> dict[str, datetime]:
    """When each request beyond the first ``max_burst`` becomes receivable: group by group."""
    return {
        request.id: now + timedelta(seconds=settings.spread_seconds * (index // settings.max_burst))
        for index, request in enumerate(requests)
        if index >= settings.max_burst
    }


def route_image_pushes(
    events: Sequence[ImagePushedEvent],
    config: SlipwayConfig,
    *,
    last_builds: LastBuildLookup,
    correlation_id: str,
    now: datetime,
) -> ImageRouteResult:
    """Route every push of one delivery; the fan-out limit applies to the delivery as a whole.

    With several events (an Event Grid batch) each ignore reason names its image, so the
    sender's delivery log says which push was skipped and why.
    """
    merged = ImageRouteResult()
    last_builds = cache(last_builds)  # a target several pushed images share: its record read once
    for event in events:
        result = _route_one(event, config, last_builds=last_builds, correlation_id=correlation_id)
        prefix = f"{event.image}: " if len(events) > 1 else ""
        merged.accepted.extend(result.accepted)
        merged.ignored.extend(Ignored(i.target, prefix + i.reason) for i in result.ignored)
        merged.notes.extend(result.notes)
    merged.accepted = list({r.id: r for r in merged.accepted}.values())
    merged.ignored = list(dict.fromkeys(merged.ignored))
    merged.notes = list(dict.fromkeys(merged.notes))
    merged.scheduled = spread(merged.accepted, config.rebuilds, now)
    if merged.scheduled:
        last = max(merged.scheduled.values())
        merged.notes.append(
            f"{len(merged.accepted)} rebuilds exceed rebuilds.max_burst ({config.rebuilds.max_burst}): "
            f"{len(merged.scheduled)} are scheduled, the last at {last.isoformat()}"
        )
    return merged


def route_image_pushed(
    event: ImagePushedEvent,
    config: SlipwayConfig,
    *,
    last_builds: LastBuildLookup,
    correlation_id: str,
    now: datetime,
) -> ImageRouteResult:
    """Route one push (see ``route_image_pushes``)."""
    return route_image_pushes(
        [event], config, last_builds=last_builds, correlation_id=correlation_id, now=now
    )
