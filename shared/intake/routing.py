"""Routing: which targets a push builds, and the BuildRequest for each.

Every Git host's receiver normalises into a ``PushEvent`` and calls ``route_push``, so repo
matching, branch and tag globs, path filters and skip directives behave the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Literal

from shared.model.build_request import (
    BuildRequest,
    Cache,
    Trigger,
    TriggerKind,
    request_id,
)
from shared.model.cache_names import branch_cache_name
from shared.model.config import SlipwayConfig, Target
from shared.model.default_branch import default_branch_for
from shared.model.events import ZERO_COMMIT, PushEvent
from shared.model.globs import any_match
from shared.model.pinned_cache import PinnedCache
from shared.model.repo_urls import https_clone_url, normalize_repo
from shared.model.request_prototypes import request_from_prototype
from shared.model.tags import compute_tags

_validate_trigger = Trigger.__pydantic_validator__.validate_python

SKIP_DIRECTIVES = ("[skip ci]", "[ci skip]", "[no ci]", "[skip actions]", "[actions skip]")


_REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


@lru_cache(maxsize=4096)
def is_valid_ref(ref: str) -> bool:
    """Git's ``check-ref-format`` rules: what a Git host can really have sent.

    Legal names may still contain ``$``, quotes or parentheses (``feat/$(reboot)`` is a valid
    branch); those are made harmless downstream by validation and quoting, not refused here.
    """
    if not ref.startswith(("refs/heads/", "refs/tags/")) or len(ref) > 1024:
        return False
    if _REF_FORBIDDEN_RE.search(ref) or ref.endswith(("/", ".")) or ref == "@":
        return False
    if not ref.isascii():
        try:  # a lone surrogate (a JSON escape can carry one) names no ref and cannot be sent on
            ref.encode()
        except UnicodeEncodeError:
            return False
    return all(part and not part.startswith(".") and not part.endswith(".lock") for part in ref.split("/"))


class NoImageTags(ValueError):
    """No tag rule of the target produces a tag for this ref."""


@dataclass(frozen=True)
class Ignored:
    target: str | None
    reason: str


@dataclass
class RouteResult:
    accepted: list[BuildRequest] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _skip_directive(message: str | None) -> str | None:
    # Every directive starts with "[" (which lower() keeps): a message without one has none, and
    # most do not, so most pushes skip lowering the whole message.
    if not message or "[" not in message:
        return None
    lowered = message.lower()
    for directive in SKIP_DIRECTIVES:
        if directive in lowered:
            return directive
    return None


def cache_names(target: Target, *, ref: str, default_branch: str | None) -> Cache:
    """Export to the ref's own cache name; import from it and the default branch's (if one is known)."""
    return _cache_names(target.cache.name, target.name, target.cache.mode, ref, default_branch)


@lru_cache(maxsize=1024)
def _cache_names(
    template: str, target: str, mode: Literal["min", "max"], ref: str, default_branch: str | None
) -> Cache:
    # The same few branches push again and again: name them once. Never a pull request's name
    # (shared.model.cache_names says why and how).
    name = branch_cache_name(template, target, ref)
    if default_branch is None:  # no default known: a name no export writes would only miss
        return Cache(name=name, from_names=[], mode=mode)
    default = branch_cache_name(template, target, f"refs/heads/{default_branch}")
    return Cache(name=name, from_names=[default] if default != name else [], mode=mode)


def request_for_commit(
    config: SlipwayConfig,
    target: Target,
    *,
    ref: str,
    commit: str | None,
    repo_url: str,
    trigger: Trigger,
    default_branch: str | None = None,
    id_parts: tuple[str, ...] = (),
) -> BuildRequest:
    """The BuildRequest building ``commit`` of ``ref`` for ``target``.

    ``commit`` None builds the ref's head (base-image and schedule triggers only). ``id_parts``
    are what else makes the build unique, such as the base image digest of a rebuild: a rebuild
    must not share its id, and so its duplicate detection, with the push build of the same commit.
    ``default_branch`` is what the sender reported (a push) or the last build recorded (a
    rebuild); ``default_branch_for`` decides, the same for tags, cache names and the record.
    Raises ``NoImageTags`` when no tag rule applies to the ref (nothing could be pushed).
    """
    branch_default = default_branch_for(target, default_branch)
    tags = compute_tags(target.image_tags, ref=ref, commit=commit, default_branch=branch_default)
    if not tags:
        raise NoImageTags(f"no image tag rule of {target.name!r} applies to {ref}")
    build_id = request_id(target.name, ref, commit or "", ",".join(target.platforms), *id_parts)
    # The same few refs push again and again, and everything but the commit, its tags, the id
    # and the trigger depends on the target and the ref alone: validate that once per ref
    # (shared.model.request_prototypes says why, with the measurement).
    return request_from_prototype(
        (config, target),
        (ref, repo_url, branch_default),
        id=build_id,
        commit=commit,
        tags=tags,
        trigger=trigger,
        validate=lambda: validated_request(
            config,
            target,
            build_id=build_id,
            ref=ref,
            commit=commit,
            tags=tags,
            repo_url=repo_url,
            trigger=trigger,
            default_branch=branch_default,
        ),
    )


def validated_request(
    config: SlipwayConfig,
    target: Target,
    *,
    build_id: str,
    ref: str,
    commit: str | None,
    tags: list[str],
    repo_url: str,
    trigger: Trigger,
    default_branch: str | None,
) -> BuildRequest:
    """The request from plain data in one full validation pass (the first push of a ref)."""
    return BuildRequest.model_validate(
        {
            "id": build_id,
            "target": target.name,
            "trigger": trigger,
            "source": {
                "repo_url": repo_url,
                "ref": ref,
                "commit": commit,
                "context": target.context,
                "dockerfile": target.dockerfile,
                "default_branch": default_branch,
            },
            "image": {"registry": config.registry, "repository": target.image, "tags": tags},
            "platforms": list(target.platforms),
            "build_args": dict(target.build_args),
            "cache": _cache_names(target.cache.name, target.name, target.cache.mode, ref, default_branch),
            "coalesce_key": f"{target.name}:{ref}",
        }
    )


def ref_refusal(target: Target, ref: str) -> str | None:
    """None when the ref is wanted, else the reason it is not."""
    if ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
        if any_match(target.branches, branch):
            return None
        return f"branch {branch!r} does not match {target.branches}"
    if ref.startswith("refs/tags/"):
        tag = ref.removeprefix("refs/tags/")
        if target.tags and any_match(target.tags, tag):
            return None
        return f"tag {tag!r} does not match {target.tags}" if target.tags else "target builds no tags"
    return f"ref {ref!r} is neither a branch nor a tag"


@dataclass(frozen=True)
class _RepoRefPlan:
    """What routing decides from the repository and the ref alone, the same for every push of them."""

    no_target_reason: str | None
    valid_ref: bool
    targets: tuple[tuple[Target, str | None], ...]  # each target of the repository, and why not the ref


_REPO_REF_PLANS: PinnedCache[_RepoRefPlan] = PinnedCache(1024)


def _repo_ref_plan(config: SlipwayConfig, repo_urls: tuple[str, ...], ref: str) -> _RepoRefPlan:
    plan = _REPO_REF_PLANS.get((config,), (repo_urls, ref))
    if plan is not None:
        return plan
    keys = {normalize_repo(u) for u in repo_urls if u}
    targets = [t for t in config.targets if normalize_repo(t.repo) in keys]
    no_target_reason = None
    if not targets:
        no_target_reason = f"no target builds {sorted(keys)[0] if keys else 'this repository'}"
    plan = _RepoRefPlan(
        no_target_reason=no_target_reason,
        valid_ref=is_valid_ref(ref),
        targets=tuple((t, ref_refusal(t, ref)) for t in targets),
    )
    return _REPO_REF_PLANS.put((config,), (repo_urls, ref), plan)


def _paths_reason(target: Target, event: PushEvent, notes: list[str]) -> str | None:
    if not target.paths and not target.ignore_paths:
        return None
    if event.changed_files is None:
        why = event.incomplete_reason or "the sender did not list the changed files"
        notes.append(f"{target.name}: paths filter not applied ({why}); building")
        return None
    relevant = [f for f in event.changed_files if not any_match(target.ignore_paths, f)]
    if target.paths:
        relevant = [f for f in relevant if any_match(target.paths, f)]
    if relevant:
        return None
    return "no changed file matches the paths filters"


def route_push(
    event: PushEvent,
    config: SlipwayConfig,
    *,
    correlation_id: str,
    received_at: datetime | None = None,
) -> RouteResult:
    result = RouteResult()
    plan = _repo_ref_plan(config, event.repo_urls, event.ref)
    if plan.no_target_reason is not None:
        result.ignored.append(Ignored(None, plan.no_target_reason))
        return result

    is_tag = event.tag is not None
    whole_event_reason: str | None = None
    if not plan.valid_ref:
        whole_event_reason = "ref is not a valid Git branch or tag name"
    elif event.deleted or event.after == ZERO_COMMIT:
        whole_event_reason = f"{'tag' if is_tag else 'branch'} deleted"
    elif (directive := _skip_directive(event.head_message)) is not None:
        whole_event_reason = f"head commit message contains {directive}"

    kind: TriggerKind = "tag" if is_tag else "push"
    # A full validation pass, called on the model's validator itself: ``Trigger(...)`` adds a
    # Python frame and a keyword dict around the same call, a quarter of its cost on every push.
    trigger: Trigger = _validate_trigger(
        {
            "kind": kind,
            "provider": event.provider,
            "delivery_id": event.delivery_id,
            "received_at": received_at or event.received_at,
            "correlation_id": correlation_id,
        }
    )
    for target, ref_reason in plan.targets:
        reason = whole_event_reason or ref_reason or _paths_reason(target, event, result.notes)
        if reason:
            result.ignored.append(Ignored(target.name, reason))
            continue
        try:
            request = request_for_commit(
                config,
                target,
                ref=event.ref,
                commit=event.after,
                # The configured repository, never a URL of the payload: the payload only routes.
                repo_url=https_clone_url(target.repo),
                trigger=trigger,
                default_branch=event.default_branch,
            )
        except NoImageTags:
            result.ignored.append(Ignored(target.name, "no image tag rule applies to this ref"))
            continue
        result.accepted.append(request)
    return result
