"""The registry receivers' fixtures (published samples), a configuration that depends on them, and
requests authenticated the way each sender is configured to authenticate."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest
from shared.platform.state import StateStore
from tests.support.receiving import fixture_json, receiver_context

ACR = "azure-container-registry"
EVENT_GRID = "azure-event-grid"
DOCKER_HUB = "dockerhub"

ACR_TOKEN = "acr-webhook-token-0123456789"
EVENTGRID_TOKEN = "eventgrid-token-0123456789"
DOCKERHUB_TOKEN = "dockerhub-token-0123456789"
SETTINGS = {
    "ACR_WEBHOOK_TOKEN": ACR_TOKEN,
    "EVENTGRID_WEBHOOK_TOKEN": EVENTGRID_TOKEN,
    "DOCKERHUB_WEBHOOK_TOKEN": DOCKERHUB_TOKEN,
}
NGINX_DIGEST = "sha256:57a94fc99816c6aa225678b738ac40d85422e75dbb96115f1bb9b6ed77176166"
ACI_DIGEST = "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"

# Every published sample's image is a base of some target: the ACR docs' hello-world:v1, the REST
# spec's samples/nginx:latest (two dependents), the 2018 docs' aci-helloworld:v1 and Docker Hub's
# svendowideit/testhook:latest (written as in FROM, without registry or tag).
CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "web",
                "repo": "https://github.com/contoso/web",
                "image": "contoso/web",
                "branches": ["main", "release/*"],
                "base_images": [
                    "myregistry.azurecr.io/hello-world:v1",
                    "jolovcr.azurecr.io/samples/nginx:latest",
                    "demo.azurecr.io/aci-helloworld:v1",
                    "svendowideit/testhook",
                ],
            },
            {
                "name": "api",
                "repo": "git@github.com:contoso/api.git",
                "image": "contoso/api",
                "branches": ["trunk"],
                "default_branch": "trunk",
                "base_images": ["jolovcr.azurecr.io/samples/nginx"],
            },
            {
                "name": "unrelated",
                "repo": "https://github.com/contoso/other",
                "image": "contoso/other",
                "base_images": ["python:3.12-slim"],
            },
        ],
    }
)


def context(
    queue: object, *, state: StateStore | None = None, config: SlipwayConfig = CONFIG, **settings: str
) -> ReceiverContext:
    return receiver_context(queue, config, {**SETTINGS, **settings}, state=state)


def acr_request(
    body: bytes, *, token: str | None = ACR_TOKEN, headers: dict[str, str] | None = None, method: str = "POST"
) -> HttpRequest:
    """An ACR delivery: the documented headers plus the custom header the webhook is given."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return HttpRequest(method, "https://slipway.example/api/hooks/acr", sent, body)


def query_request(
    route: str,
    body: bytes,
    *,
    token: str | None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> HttpRequest:
    """A delivery authenticated by ``?token=`` in the URL, as Event Grid and Docker Hub send it."""
    query = {"token": token} if token is not None else {}
    url = f"https://slipway.example/api/hooks/{route}" + (f"?{urlencode(query)}" if query else "")
    sent = {"Content-Type": content_type, **(headers or {})} if content_type else dict(headers or {})
    return HttpRequest(method, url, sent, body, query=query)


def eventgrid_request(body: bytes, *, token: str | None = EVENTGRID_TOKEN, **kw: Any) -> HttpRequest:
    return query_request("eventgrid", body, token=token, **kw)


def dockerhub_request(body: bytes, *, token: str | None = DOCKERHUB_TOKEN, **kw: Any) -> HttpRequest:
    return query_request("dockerhub", body, token=token, **kw)


def as_array(*names: str) -> bytes:
    """Single-event samples delivered as Event Grid does: in a JSON array."""
    return json.dumps([fixture_json(EVENT_GRID, name) for name in names]).encode()
