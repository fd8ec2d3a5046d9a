"""The BuildRequest of a pull request a target's policy decided to build (issue #20, item 3).

The receivers queue it (``shared.intake.receivers.pr_answers``) and the dispatcher holds it against
the target's policy again (``shared.dispatch.request_check``).

What the request carries, against a push build of the same commit:

* the head commit, the platforms the ``decide`` verdict gives (the policy's subset or the target's);
* the cache: it writes only ``<target>-pr-<number>`` and reads that and the base branch's cache,
  named as a push to the base branch names it (``shared.model.cache_names`` says why no branch or
  tag build can ever read what a pull request writes);
* the image: ``pr-<n>`` / ``pr-<n>-<sha>`` tags only; with ``push: scratch`` in the scratch
  repository; with ``push: none`` the target's repository, as the name of what is built: the
  renderer reads ``pull_request.push`` and exports to the cache only, so nothing is pushed;
* an id of its own (the request number is part of it), so it never shares Service Bus duplicate
  detection with a push build of the same commit, and a coalesce key per request
  (``<target>:pr-<n>``), so a new head supersedes the older build of the same request. After the
  request was closed and reopened, the id also holds how many closes were recorded
  (``generation``, ``shared.runs.pull_request_state``): the reopened request's build of the same
  head is a new build, not the cancelled one, and a retried delivery still has the same id. A
  fork's id also holds how many removals of its trust label were recorded (``withdrawals``), so
  the label added again to the head whose build its removal cancelled builds again;
* the target's build arguments, except, for a fork, those whose names look secret
  (``is_secret_build_arg``): the fork's Dockerfile reads every build argument, and the renderer
  refuses a fork's request that carries one (``shared.acr.task.pr_isolation``).
"""

from __future__ import annotations

from datetime import datetime

from shared.intake.pr_policy import PullRequestDecision
from shared.model.build_request import BuildRequest, Trigger, request_id
from shared.model.cache_names import branch_cache_name, pr_cache_name, pr_tags
from shared.model.config import SlipwayConfig, Target
from shared.model.events import PullRequestEvent
from shared.model.repo_urls import https_clone_url
from shared.model.supply_chain import is_secret_build_arg


class NotBuildable(ValueError):
    """The verdict says not to build, or the event lacks what a build needs (a full head commit)."""


def request_for_pull_request(
    event: PullRequestEvent,
    config: SlipwayConfig,
    target: Target,
    decision: PullRequestDecision,
    *,
    correlation_id: str,
    received_at: datetime | None = None,
    generation: int = 0,
    withdrawals: int = 0,
    head_commit: str | None = None,
) -> BuildRequest:
    """The request building ``event``'s head for ``target``; raises ``NotBuildable`` when it can't.

    ``generation``: the closes recorded for the request (0: never closed, the id as it always was);
    ``withdrawals``: the removals of a fork's trust label recorded (part of a fork's id only);
    ``head_commit``: the full head commit when the event only had an abbreviation (resolved).
    """
    if not decision.build:
        raise NotBuildable(f"{target.name}: {decision.reason}")
    commit = event.head_commit or head_commit
    if commit is None:
        raise NotBuildable(
            f"{target.name}: the host sent an abbreviated head commit ({event.head_commit_abbrev})"
        )
    if event.head_commit_abbrev is not None and not commit.startswith(event.head_commit_abbrev):
        raise NotBuildable(
            f"{target.name}: {commit} is not the head {event.head_commit_abbrev} the host sent"
        )
    policy = target.pull_requests
    number = event.number
    # After a reopening: a new build even of the same head (its cancelled build holds the old id).
    reopened = (f"generation-{generation}",) if generation else ()
    # After the trust label was removed: the label added again builds again, even the same head.
    relabelled = (f"trust-{withdrawals}",) if withdrawals and event.fork else ()
    platforms = list(decision.platforms or target.platforms)
    # push: none names the target's image only to say what is built: nothing is pushed (the
    # renderer exports to the cache only, from pull_request.push), and its tags are pr-<n> ones.
    repository = policy.scratch_repository if policy.push == "scratch" else target.image
    image = {"registry": config.registry, "repository": repository, "tags": pr_tags(number, commit)}
    base_cache = branch_cache_name(target.cache.name, target.name, event.base_ref)
    return BuildRequest.model_validate(
        {
            # "pull-request" and the number: never the id of a push build of the same commit.
            "id": request_id(
                target.name,
                "pull-request",
                str(number),
                commit,
                ",".join(platforms),
                policy.push,
                *reopened,
                *relabelled,
            ),
            "target": target.name,
            "trigger": Trigger(
                kind="pull-request",
                provider=event.provider,
                delivery_id=event.delivery_id,
                received_at=received_at or event.received_at,
                correlation_id=correlation_id,
            ),
            "source": {
                # The configured repository, never a URL of the payload (a fork's head commit is
                # fetched from the base repository, where the host keeps the request's refs).
                "repo_url": https_clone_url(target.repo),
                "ref": event.head_ref,
                "commit": commit,
                "context": target.context,
                "dockerfile": target.dockerfile,
                # None: a pull-request build is never recorded as the target's last build.
                "default_branch": None,
            },
            "image": image,
            "platforms": platforms,
            "build_args": {
                name: value
                for name, value in target.build_args.items()
                if not (event.fork and is_secret_build_arg(name))
            },
            "cache": {
                "name": pr_cache_name(target.name, number),
                "from_names": [base_cache],
                "mode": target.cache.mode,
            },
            "coalesce_key": f"{target.name}:pr-{number}",
            "pull_request": {
                "number": number,
                "head_commit": commit,
                "head_ref": event.head_ref,
                "base_ref": event.base_ref,
                "fork": event.fork,
                "push": policy.push,
                "scratch_repository": policy.scratch_repository,
            },
        }
    )
