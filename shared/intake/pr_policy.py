"""Whether a target builds a pull request event, by its ``pull_requests:`` policy (issue #20).

A pure function of the event and the target; the receivers (``shared.intake.receivers.pr_answers``) apply it.
The rules, in order:

1. the policy is off: never built;
2. a ``closed`` or ``unlabeled`` event builds nothing (a close will cancel, not build);
3. the base branch must match the policy's ``branches`` (default: the target's);
4. a fork request (head in another repository): ``forks: off`` never builds it; ``forks: on``
   treats it as any other; ``forks: label`` builds it only on the event that *adds* the label: a
   new push (``updated``), an opening or a reopening builds nothing, so a new push removes the
   trust until a maintainer labels again. Hosts that do not say which label an event added
   (Gitea's ``label_updated``) or send no label events (Azure DevOps, Bitbucket) never build a
   fork request under ``forks: label``;
5. a ``labeled`` event of a request that is not a fork builds nothing (its head did not move);
6. ``paths``: when the changed files are known, one must match; when not (no Git host lists them
   in a PR event), the request is built with a note.

``withdrawn_label`` tells the event that takes a fork's trust back under ``forks: label``: the
label removed (GitHub ``unlabeled``, a GitLab label change without it, Gitea ``label_cleared`` or a
``label_updated`` whose set lacks it). The receiver records it, and the builds the label trusted are
cancelled as a close cancels them (``shared.dispatch.pr_closed``). Gitea's events do not say the
label was there, so the receiver records those only while a trust is recorded
(``shared.runs.pull_request_state``); a trusting ``labeled`` event is recorded there too, and one
older than the last removal is refused.

A fork request that is built gets none of the target's secrets (``shared.acr.task.pr_isolation``);
the build arguments it goes without are named in a note. (A target that needs a Git token cannot
have ``forks`` on: its configuration is refused.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.model.config.targets import Target
from shared.model.events import PullRequestEvent
from shared.model.globs import any_match
from shared.model.repo_urls import normalize_repo
from shared.model.supply_chain import is_secret_build_arg

BUILDS_ON = frozenset({"opened", "reopened", "updated"})
# Hosts that send no event when a label is added to a pull request, so ``forks: label`` never
# builds a fork's request there (``config validate`` warns). Azure DevOps: its pull request events
# are created, updated (``notificationType`` PushNotification, ReviewersUpdateNotification,
# StatusUpdateNotification, ReviewerVoteNotification only), merge attempted and commented
# (learn.microsoft.com/azure/devops/service-hooks/events, "Pull request updated"); Bitbucket Cloud:
# pullrequest:created|updated|approved|unapproved|changes_request_*|fulfilled|rejected|comment_*,
# and its pull requests carry no labels (support.atlassian.com/bitbucket-cloud/docs/event-payloads/).
# The receivers read neither host's events as ``labeled`` (``shared.intake.receivers``).
_AZURE_DEVOPS_HOSTS = ("dev.azure.com", "ssh.dev.azure.com")
_BITBUCKET_CLOUD = "bitbucket.org"


@dataclass(frozen=True)
class PullRequestDecision:
    """``build`` or not, and why; ``platforms`` are those to build when built."""

    build: bool
    reason: str
    platforms: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _ignore(reason: str) -> PullRequestDecision:
    return PullRequestDecision(build=False, reason=reason)


def _fork_refusal(event: PullRequestEvent, target: Target) -> str | None:
    """Why a fork request is not built under the target's fork policy, or None when it is."""
    policy = target.pull_requests
    if policy.forks == "off":
        return "fork pull request: forks are off for this target"
    if policy.forks == "on":
        return None
    label = policy.label or ""
    if event.action == "labeled":
        if event.labels_added is None:
            return (
                f"fork pull request: {event.provider} does not say which label was added, "
                f"so {label!r} cannot be told apart from an older label"
            )
        if label in event.labels_added and label in event.labels:
            return None
        return f"fork pull request: the label added is not {label!r}"
    if event.action == "updated" and label in event.labels:
        # The label is still on the request, and hosts send no event for a label added twice.
        return f"fork pull request: a new push removes the trust; remove the label {label!r} and add it again"
    return f"fork pull request: waiting for a maintainer to add the label {label!r}"


def host_without_label_events(repo: str) -> str | None:
    """The name of ``repo``'s host when it sends no label events (Azure DevOps, Bitbucket Cloud)."""
    normalized = normalize_repo(repo)
    host = normalized.partition("/")[0]
    # Azure DevOps Server lives anywhere; its repositories are at <collection>/<project>/_git/<repo>.
    if host in _AZURE_DEVOPS_HOSTS or host.endswith(".visualstudio.com") or "/_git/" in normalized:
        return "Azure DevOps"
    if host == _BITBUCKET_CLOUD:
        return "Bitbucket Cloud"
    return None


def withdrawn_label(event: PullRequestEvent, target: Target) -> str | None:
    """The trust label ``event`` removes from a fork request under ``forks: label``, or None."""
    policy = target.pull_requests
    if not (policy.enabled and event.fork and policy.forks == "label" and policy.label):
        return None
    if event.action not in ("labeled", "unlabeled"):
        return None
    label = policy.label
    if event.labels_removed is None:  # the host does not say: label_cleared removes them all
        removed = event.action == "unlabeled" or label not in event.labels
    else:
        removed = label in event.labels_removed
    return label if removed else None


def decide(
    event: PullRequestEvent, target: Target, *, changed_files: Iterable[str] | None = None
) -> PullRequestDecision:
    """Build or ignore ``event`` for ``target``; ``changed_files`` when known (None: not known)."""
    policy = target.pull_requests
    if not policy.enabled:
        return _ignore("pull-request builds are off for this target")
    if event.action in ("closed", "unlabeled"):
        return _ignore(f"pull request {event.action}: nothing to build")
    branches = policy.branches if policy.branches is not None else target.branches
    if not any_match(branches, event.base_branch):
        return _ignore(f"base branch {event.base_branch!r} does not match the pull request branch filters")
    if event.fork:
        if (refusal := _fork_refusal(event, target)) is not None:
            return _ignore(refusal)
    elif event.action not in BUILDS_ON:
        return _ignore(f"pull request {event.action}: its head did not move")
    notes: list[str] = []
    if policy.paths:
        if changed_files is None:
            notes.append("paths filter not applied (the changed files are not known); building")
        elif not any(any_match(policy.paths, path) for path in changed_files):
            return _ignore("no changed file matches the pull request paths filter")
    if event.head_commit is None:
        notes.append(
            f"the host sent an abbreviated head commit ({event.head_commit_abbrev}); resolve it first"
        )
    withheld = sorted(name for name in target.build_args if event.fork and is_secret_build_arg(name))
    if withheld:
        notes.append(
            f"build_args {', '.join(withheld)} look secret and are not passed to a fork pull request"
        )
    platforms = tuple(policy.platforms or target.platforms)
    why = (
        "fork pull request trusted by its label"
        if event.fork and policy.forks == "label"
        else "policy allows it"
    )
    return PullRequestDecision(build=True, reason=why, platforms=platforms, notes=tuple(notes))
