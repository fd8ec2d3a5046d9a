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
from shared.intake.receivers.pull_requests import PullRequests, read_azure_devops
from shared.intake.receivers.signatures import basic_auth_matches
from shared.intake.routing import Ignored
from shared.model.build_request import CommitId
from shared.model.events import PushEvent
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
_PULL_REQUESTS = PullRequests(PROVIDER, read_azure_devops)
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
