"""Azure DevOps: ``git.push`` service hooks, authenticated with HTTP Basic.

Azure DevOps signs nothing; its Web Hooks subscription can send a user name and password,
which are compared in constant time before the body is read. One push event may update
several refs (``resource.refUpdates``): each becomes a ``PushEvent``, routed on its own, and the
delivery gets one merged answer.

The payload never lists changed files, so ``changed_files`` is None and a target's paths filter
is not applied (the answer carries a note saying so): such a target builds on every push.

Delivery id: the event's ``id`` (a GUID that stays the same when Azure DevOps retries the
notification), else ``<subscriptionId>:<notificationId>``; Azure DevOps sends no delivery header.
An annotated tag's ``newObjectId`` is the tag object, not a commit: the payload does not say
which commit it points to, so such a tag is built from the id the payload gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from shared.intake.receivers.answers import Pushes
from shared.intake.receivers.checks import (
    PayloadModel,
    is_zero_commit,
    json_body,
    parse_json,
    payload_clone_url,
    required_setting,
    unique_urls,
)
from shared.intake.receivers.pipeline import (
    Deferred,
    Delivery,
    ReceiverContext,
    Sender,
    event_not_handled,
    safe_delivery_id,
)
from shared.intake.receivers.pull_requests import WHAT, PullRequests, branch_ref
from shared.intake.receivers.signatures import basic_auth_matches
from shared.intake.routing import Ignored
from shared.model.build_request import CommitId
from shared.model.events import PullRequestAction, PullRequestEvent, PushEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

PROVIDER = "azure-devops"
USER_SETTING = "AZURE_DEVOPS_WEBHOOK_USER"
PASSWORD_SETTING = "AZURE_DEVOPS_WEBHOOK_PASSWORD"
PUSH_EVENT_TYPE = "git.push"
# Service hooks events page (learn.microsoft.com/azure/devops/service-hooks/events): "Pull request
# created", "Pull request updated", "Pull request merge attempted".
PULL_REQUEST_EVENT_TYPES = frozenset(
    {"git.pullrequest.created", "git.pullrequest.updated", "git.pullrequest.merged"}
)
NO_FILES_REASON = "Azure DevOps push events do not list changed files"
CHALLENGE = 'Basic realm="slipway", charset="UTF-8"'
logger = logging.getLogger("slipway.webhooks.azure_devops")


class _AdoModel(PayloadModel):
    """Azure DevOps names fields in camelCase; the models use snake_case."""

    model_config = ConfigDict(alias_generator=to_camel)


class AzureDevOpsEnvelope(_AdoModel):
    """What every service hook event carries, read before deciding whether it is a push."""

    id: str | None = None
    event_type: str | None = None
    subscription_id: str | None = None
    notification_id: int | str | None = None

    def delivery_id(self) -> str | None:
        if (event_id := safe_delivery_id(self.id)) is not None:
            return event_id
        if self.subscription_id and self.notification_id is not None:
            return safe_delivery_id(f"{self.subscription_id}:{self.notification_id}")
        return None


class AzureDevOpsRefUpdate(_AdoModel):
    name: str = Field(min_length=1)
    old_object_id: str | None = None
    new_object_id: CommitId


class AzureDevOpsCommit(_AdoModel):
    commit_id: str = ""
    comment: str = ""


class AzureDevOpsRepository(_AdoModel):
    remote_url: str | None = None
    web_url: str | None = None
    ssh_url: str | None = None
    url: str | None = None
    default_branch: str | None = None


class AzureDevOpsResource(_AdoModel):
    ref_updates: list[AzureDevOpsRefUpdate] = Field(default_factory=list)
    commits: list[AzureDevOpsCommit] = Field(default_factory=list)
    repository: AzureDevOpsRepository


class AzureDevOpsPush(AzureDevOpsEnvelope):
    resource: AzureDevOpsResource


def comparable_urls(push: AzureDevOpsPush) -> tuple[str, ...]:
    """The repository URLs that must agree: ``remoteUrl``, ``webUrl`` and a Services ``sshUrl``.

    Azure DevOps Services writes one repository three ways (``https://org@dev.azure.com/org/
    project/_git/repo``, ``https://org.visualstudio.com/project/_git/repo``,
    ``git@ssh.dev.azure.com:v3/org/project/repo``), so each is reduced to its organisation,
    project and repository first. ``url`` is an API address by GUID, not comparable; an
    ``sshUrl`` of Azure DevOps Server has no documented form here, so it is left out.
    """
    from shared.runs.commit_status import parse_azure_devops_repo  # only pushes from Azure DevOps need it

    repo = push.resource.repository
    urls = []
    for url in unique_urls(repo.remote_url, repo.web_url, repo.ssh_url):
        services = parse_azure_devops_repo(url)
        if services is not None:
            urls.append(
                f"https://dev.azure.com/{services.organization}/{services.project}/_git/{services.repository}"
            )
        elif url != repo.ssh_url:
            urls.append(url)
    return tuple(urls)


def to_push_events(
    push: AzureDevOpsPush, delivery_id: str | None, received_at: datetime
) -> tuple[Sequence[PushEvent], Sequence[Ignored]]:
    """One ``PushEvent`` per updated ref, in the order Azure DevOps lists them."""
    repo = push.resource.repository
    repo_urls = unique_urls(repo.remote_url, repo.web_url, repo.ssh_url, repo.url)
    clone_url = payload_clone_url(repo.remote_url, repo.web_url)
    default_branch = repo.default_branch.removeprefix("refs/heads/") if repo.default_branch else None
    messages = {c.commit_id: c.comment for c in push.resource.commits if c.commit_id}
    events = []
    for update in push.resource.ref_updates:
        deleted = is_zero_commit(update.new_object_id)
        events.append(
            PushEvent(
                provider=PROVIDER,
                delivery_id=delivery_id,
                received_at=received_at,
                repo_urls=repo_urls,
                clone_url=clone_url,
                ref=update.name,
                after=update.new_object_id,
                before=update.old_object_id,
                created=not deleted and is_zero_commit(update.old_object_id),
                deleted=deleted,
                default_branch=default_branch,
                head_message=messages.get(update.new_object_id),
                changed_files=None,
                incomplete_reason=NO_FILES_REASON,
            )
        )
    return events, []


# Pull requests (issue #20): read into PullRequestEvent, see shared.intake.receivers.pull_requests.


class _AdoRepository(_AdoModel):
    id: str | None = None
    remote_url: str | None = None
    web_url: str | None = None
    ssh_url: str | None = None


class _AdoCommit(_AdoModel):
    commit_id: CommitId


class _AdoForkRef(_AdoModel):
    repository: _AdoRepository | None = None


class _AdoLabel(_AdoModel):
    name: str = ""
    active: bool | None = None


class _AdoPullRequest(_AdoModel):
    pull_request_id: int
    status: str | None = None
    source_ref_name: str = Field(min_length=1)
    target_ref_name: str = Field(min_length=1)
    last_merge_source_commit: _AdoCommit
    repository: _AdoRepository
    # GitPullRequest.forkSource: "If this is a PR from a fork this will contain information about
    # its source." (learn.microsoft.com/javascript/api/azure-devops-extension-api/gitpullrequest)
    fork_source: _AdoForkRef | None = None
    labels: list[_AdoLabel] = Field(default_factory=list)


class AzureDevOpsPullRequestPayload(_AdoModel):
    event_type: str
    resource: _AdoPullRequest


def _ado_urls(repo: _AdoRepository | None) -> tuple[str, ...]:
    return unique_urls(repo.remote_url, repo.web_url, repo.ssh_url) if repo else ()


def read_azure_devops(
    body: bytes, media_type: str, delivery_id: str | None, received_at: datetime
) -> PullRequestEvent | str:
    payload = parse_json(AzureDevOpsPullRequestPayload, body, what=WHAT)
    pr = payload.resource
    status = (pr.status or "").lower()
    action: PullRequestAction
    if status in ("completed", "abandoned"):
        action = "closed"
    elif payload.event_type == "git.pullrequest.created":
        action = "opened"
    else:
        # updated (or a merge commit made for an active request): it does not say whether the
        # source branch moved, so it is read as if it did.
        action = "updated"
    fork_repo = pr.fork_source.repository if pr.fork_source else None
    base_urls = _ado_urls(pr.repository)
    return PullRequestEvent(
        provider="azure-devops",
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=base_urls,
        number=pr.pull_request_id,
        action=action,
        head_commit=pr.last_merge_source_commit.commit_id,
        head_ref=branch_ref(pr.source_ref_name),
        head_repo_urls=_ado_urls(fork_repo) if pr.fork_source else base_urls,
        base_ref=branch_ref(pr.target_ref_name),
        fork=pr.fork_source is not None,
        labels=frozenset(x.name for x in pr.labels if x.active is not False),
        merged=status == "completed",
        sender_action=payload.event_type,
    )


_PULL_REQUESTS = PullRequests(PROVIDER, read_azure_devops)


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    user = required_setting(ctx, USER_SETTING)
    password = required_setting(ctx, PASSWORD_SETTING)
    authorization = req.header("Authorization")
    if not authorization:
        raise RequestRejected(401, "unauthorized", "Authorization (HTTP Basic) is missing")
    if not basic_auth_matches(authorization, user, password):
        raise RequestRejected(401, "unauthorized", "HTTP Basic credentials do not match")


def triage(req: HttpRequest, media_type: str, delivery: Delivery) -> HttpResponse | Deferred | None:
    """By the event's ``eventType`` (Azure DevOps sends no event header); the event names the delivery."""
    envelope = parse_json(AzureDevOpsEnvelope, req.body, what="service hook event")
    delivery.identify(envelope.delivery_id())
    if not envelope.event_type:
        raise RequestRejected(400, "bad_request", "service hook event: eventType is missing")
    if envelope.event_type in PULL_REQUEST_EVENT_TYPES:
        return _PULL_REQUESTS(req, media_type, delivery)
    if envelope.event_type != PUSH_EVENT_TYPE:
        return event_not_handled(delivery.correlation_id, envelope.event_type)
    return None


def _no_ref_updates(push: AzureDevOpsPush) -> str | None:
    return None if push.resource.ref_updates else "the push updates no ref"


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    challenge=CHALLENGE,
    authenticate=authenticate,
    triage=triage,
    parse=json_body(AzureDevOpsPush, what="push payload"),
    answer=Pushes(normalise=to_push_events, compared_urls=comparable_urls, nothing_to_build=_no_ref_updates),
)


def receive_azure_devops(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/azure-devops``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)
