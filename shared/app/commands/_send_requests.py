"""What ``slipway send`` sends: each sender's request(s), built with the receivers' own rules.

The routes are handlers/webhooks.py's; the signatures come from ``shared.intake.receivers`` (one
implementation of each rule); the secrets from the settings the receivers read. Each request
keeps two views: what is sent, and what may be shown, every credential as ``<redacted: SETTING>``.
The headers are the ones each provider documents for its deliveries, cited beside each builder.
A pull request's event header is told from its body (``_send_pull_requests.event_of_file``), and
``--pull-request`` bodies are made there too.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from shared.app.commands._send_pull_requests import event_of_file, gitea_event_type

DEFAULT_URL = "http://127.0.0.1:7071/api/"
# The routes of handlers/webhooks.py, relative to the app's /api/ prefix.
ROUTES = {
    "github": "hooks/github",
    "gitlab": "hooks/gitlab",
    "azure-devops": "hooks/azure-devops",
    "bitbucket": "hooks/bitbucket",
    "gitea": "hooks/gitea",
    "acr": "hooks/acr",
    "eventgrid": "hooks/eventgrid",
    "dockerhub": "hooks/dockerhub",
}
SENDERS = tuple(ROUTES)
JSON = "application/json"
# Event Grid names itself so in the CloudEvents abuse-protection handshake and then sends the same
# value as Origin with each delivery (CloudEvents HTTP webhook spec §4.1.1, which Event Grid follows:
# https://learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema).
EVENT_GRID_ORIGIN = "eventgrid.azure.net"


@dataclass
class Outgoing:
    """One request: what is sent, and what may be shown (every credential redacted)."""

    method: str
    url: str
    shown_url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    shown_headers: dict[str, str] = field(default_factory=dict)
    # An OPTIONS handshake whose refusal stops the delivery (Event Grid, CloudEvents schema).
    handshake: bool = False

    def add(self, name: str, value: str, shown: str | None = None) -> None:
        self.headers[name] = value
        self.shown_headers[name] = value if shown is None else shown

    def view(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.shown_url,
            "headers": dict(self.shown_headers),
            "body_bytes": None if self.body is None else len(self.body),
        }


@dataclass(frozen=True)
class Trial:
    """What ``send`` is asked to deliver."""

    sender: str
    body: bytes
    url: str  # the route's full URL, without query
    event: str | None
    delivery: str


def redacted(setting: str) -> str:
    return f"<redacted: {setting}>"


def secret(setting: str) -> str:
    """A receiver's secret setting, as ``slipway serve`` reads it; unset is a one-line error."""
    from shared.app.cli import CliError

    value = os.environ.get(setting, "")
    if not value:
        raise CliError(
            f"{setting} is not set (the environment, or the --settings file 'slipway serve' reads)"
        )
    return value


def _payload(body: bytes) -> Any:
    """The body as JSON for reading its event kind, or None (it is sent as is either way)."""
    try:
        return json.loads(body.removeprefix(b"\xef\xbb\xbf"))
    except (ValueError, RecursionError):
        return None


def _post(trial: Trial, content_type: str = JSON, body: bytes | None = None) -> Outgoing:
    out = Outgoing("POST", trial.url, trial.url, trial.body if body is None else body)
    out.add("Content-Type", content_type)
    return out


def _with_token(out: Outgoing, setting: str) -> Outgoing:
    """The ``?token=`` Event Grid and Docker Hub webhook URLs carry (``checks.query_token``)."""
    token = secret(setting)
    out.url = f"{out.url}?token={quote(token, safe='')}"
    out.shown_url = f"{out.shown_url}?token={redacted(setting)}"
    return out


# --- GitHub --------------------------------------------------------------------------------------
# Headers: https://docs.github.com/webhooks/webhook-events-and-payloads#delivery-headers
# Signature: https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
def _github(trial: Trial) -> list[Outgoing]:
    from shared.app.commands.serve import LOCAL_SECRET
    from shared.intake.receivers import github
    from shared.model.loopback import is_loopback

    key = os.environ.get(github.SECRET_SETTING, "")
    if not key and is_loopback(urlsplit(trial.url).hostname or ""):
        # What `slipway serve` itself checks against on loopback when the setting is unset.
        key = LOCAL_SECRET
        print(f"{github.SECRET_SETTING} is not set: signing with serve's local default", file=sys.stderr)
    key = key or secret(github.SECRET_SETTING)
    payload = _payload(trial.body)
    # A ping's payload has zen and hook_id (GitHub's "ping" event), a pull request's its
    # pull_request (``event_of_file``); anything else defaults to push.
    pinged = isinstance(payload, dict) and "zen" in payload and "hook_id" in payload
    out = _post(trial)
    event = trial.event or ("ping" if pinged else event_of_file("github", payload) or "push")
    out.add("X-GitHub-Event", event)
    out.add("X-GitHub-Delivery", trial.delivery)
    out.add(
        "X-Hub-Signature-256",
        github.sign(key.encode(), trial.body),
        f"sha256={redacted('HMAC-SHA256 of the body with ' + github.SECRET_SETTING)}",
    )
    return [out]


# --- GitLab --------------------------------------------------------------------------------------
# Headers (X-Gitlab-Event, X-Gitlab-Token, X-Gitlab-Event-UUID, Idempotency-Key):
# https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers. The event header is
# the hook's name titleized, "System Hook" for a system hook (WebHookService.hook_to_event,
# https://gitlab.com/gitlab-org/gitlab/-/blob/master/app/services/web_hook_service.rb); a project
# hook's body says which in object_kind, a system hook's body has event_name and no object_kind.
_GITLAB_HOOKS = {"build": "Job Hook"}  # object_kind "build" is sent by the job hook


def gitlab_event(payload: Any) -> str | None:
    """The ``X-Gitlab-Event`` GitLab sends with ``payload``, or None when the body does not say."""
    if not isinstance(payload, dict):
        return None
    kind = payload.get("object_kind")
    if isinstance(kind, str) and kind:
        return _GITLAB_HOOKS.get(kind, kind.replace("_", " ").title() + " Hook")
    return "System Hook" if isinstance(payload.get("event_name"), str) else None


def _gitlab(trial: Trial) -> list[Outgoing]:
    from shared.app.cli import CliError
    from shared.intake.receivers import gitlab

    token = secret(gitlab.TOKEN_SETTING)
    event = trial.event or gitlab_event(_payload(trial.body))
    if event is None:
        raise CliError("the payload has no object_kind or event_name to tell the GitLab event: pass --event")
    out = _post(trial)
    out.add(gitlab.EVENT_HEADER, event)
    out.add("X-Gitlab-Event-UUID", trial.delivery)
    out.add("Idempotency-Key", trial.delivery)
    out.add(gitlab.TOKEN_HEADER, token, redacted(gitlab.TOKEN_SETTING))
    return [out]


# --- Azure DevOps --------------------------------------------------------------------------------
# A Web Hooks subscription's "Basic authentication username/password"; the event type is the
# body's eventType: https://learn.microsoft.com/azure/devops/service-hooks/services/webhooks
def _azure_devops(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import azure_devops
    from shared.intake.receivers.signatures import basic_auth_header

    user = secret(azure_devops.USER_SETTING)
    password = secret(azure_devops.PASSWORD_SETTING)
    out = _post(trial)
    shown = f"Basic {redacted(azure_devops.USER_SETTING + ':' + azure_devops.PASSWORD_SETTING)}"
    out.add("Authorization", basic_auth_header(user, password), shown)
    return [out]


# --- Bitbucket Cloud -----------------------------------------------------------------------------
# Headers (X-Event-Key, X-Hook-UUID, X-Request-UUID, X-Attempt-Number, X-Hub-Signature:
# sha256=<hex HMAC>):
# https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/ (HTTP headers) and
# https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/ (secure webhooks).
def _bitbucket(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import bitbucket
    from shared.intake.receivers.signatures import hmac_sha256_hex

    key = secret(bitbucket.SECRET_SETTING)
    event = trial.event or event_of_file("bitbucket", _payload(trial.body)) or bitbucket.PUSH_EVENT
    out = _post(trial)
    out.add(bitbucket.EVENT_HEADER, event)
    # X-Hook-UUID names the webhook, so it stays the same for every send to one URL.
    out.add("X-Hook-UUID", str(uuid.uuid5(uuid.NAMESPACE_URL, trial.url)))
    out.add("X-Request-UUID", trial.delivery)
    out.add("X-Attempt-Number", "1")
    out.add(
        bitbucket.SIGNATURE_HEADER,
        bitbucket.SIGNATURE_PREFIX + hmac_sha256_hex(key.encode(), trial.body),
        f"{bitbucket.SIGNATURE_PREFIX}{redacted('HMAC-SHA256 of the body with ' + bitbucket.SECRET_SETTING)}",
    )
    return [out]


# --- Gitea ---------------------------------------------------------------------------------------
# The headers Gitea adds to every delivery (addDefaultHeaders in services/webhook/deliver.go,
# https://github.com/go-gitea/gitea/blob/50e782654e78d86288b79bdb5facd69078088bb0/services/webhook/deliver.go):
# its own, Gogs' and GitHub's names for the delivery, the event and the hex HMAC-SHA256. (It also
# sends a SHA-1 X-Hub-Signature, which Slipway does not read and send does not make.)
def _gitea(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import gitea
    from shared.intake.receivers.signatures import hmac_sha256_hex

    key = secret(gitea.SECRET_SETTING)
    signature = hmac_sha256_hex(key.encode(), trial.body)
    shown = redacted("HMAC-SHA256 of the body with " + gitea.SECRET_SETTING)
    payload = _payload(trial.body)
    event = trial.event or event_of_file("gitea", payload) or "push"
    event_type = gitea_event_type(event, payload)  # pull_request_sync, pull_request_label...
    out = _post(trial)
    for prefix in ("X-Gitea", "X-Gogs", "X-GitHub"):
        out.add(f"{prefix}-Delivery", trial.delivery)
        out.add(f"{prefix}-Event", event)
        out.add(f"{prefix}-Event-Type", event_type)
    out.add("X-Gitea-Signature", signature, shown)
    out.add("X-Gogs-Signature", signature, shown)
    out.add("X-Hub-Signature-256", "sha256=" + signature, "sha256=" + shown)
    return [out]


# --- Azure Container Registry --------------------------------------------------------------------
# A registry webhook sends the custom headers it was created with (az acr webhook create --headers),
# here "Authorization: Bearer <token>": https://learn.microsoft.com/azure/container-registry/container-registry-webhook
def _acr(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import acr

    token = secret(acr.TOKEN_SETTING)
    out = _post(trial)
    out.add("Authorization", f"Bearer {token}", f"Bearer {redacted(acr.TOKEN_SETTING)}")
    return [out]


# --- Azure Event Grid ----------------------------------------------------------------------------
# Event Grid schema: always a JSON array, with aeg-event-type Notification or SubscriptionValidation
# (https://learn.microsoft.com/azure/event-grid/webhook-event-delivery). CloudEvents schema: one event
# as application/cloudevents+json (a batch as application/cloudevents-batch+json), after the OPTIONS
# abuse-protection handshake (https://learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema).
def _is_cloud_event(event: Any) -> bool:
    return isinstance(event, dict) and "eventType" not in event and "type" in event


def _eventgrid(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import eventgrid

    payload = _payload(trial.body)
    events = payload if isinstance(payload, list) else [payload]
    if events and all(_is_cloud_event(e) for e in events):
        kind = eventgrid.CLOUD_EVENT_BATCH if isinstance(payload, list) else eventgrid.CLOUD_EVENT
        handshake = _with_token(
            Outgoing("OPTIONS", trial.url, trial.url, handshake=True), eventgrid.TOKEN_SETTING
        )
        handshake.add("WebHook-Request-Origin", EVENT_GRID_ORIGIN)
        out = _with_token(_post(trial, kind), eventgrid.TOKEN_SETTING)
        out.add("Origin", EVENT_GRID_ORIGIN)
        out.add("aeg-event-type", trial.event or "Notification")
        return [handshake, out]
    body = trial.body
    if isinstance(payload, dict):
        # One event written down alone is delivered as Event Grid delivers every batch: in an array.
        body = b"[" + trial.body + b"]"
        print("one Event Grid event: sent in an array, as Event Grid delivers it", file=sys.stderr)
    validation = any(isinstance(e, dict) and e.get("eventType") == eventgrid.VALIDATION_EVENT for e in events)
    out = _with_token(_post(trial, eventgrid.EVENT_GRID_JSON, body), eventgrid.TOKEN_SETTING)
    out.add("aeg-event-type", trial.event or ("SubscriptionValidation" if validation else "Notification"))
    return [out]


# --- Docker Hub ----------------------------------------------------------------------------------
# A plain JSON POST to the webhook URL, which carries the token:
# https://docs.docker.com/docker-hub/repos/manage/webhooks/
def _dockerhub(trial: Trial) -> list[Outgoing]:
    from shared.intake.receivers import dockerhub

    return [_with_token(_post(trial), dockerhub.TOKEN_SETTING)]


BUILDERS: dict[str, Callable[[Trial], list[Outgoing]]] = {
    "github": _github,
    "gitlab": _gitlab,
    "azure-devops": _azure_devops,
    "bitbucket": _bitbucket,
    "gitea": _gitea,
    "acr": _acr,
    "eventgrid": _eventgrid,
    "dockerhub": _dockerhub,
}


def build_requests(trial: Trial) -> list[Outgoing]:
    """The request(s) ``trial.sender`` would send; the last one is the delivery."""
    return BUILDERS[trial.sender](trial)
