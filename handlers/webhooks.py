"""HTTP triggers for webhooks: translate azure.functions types, call the receiver, translate back.

Every route is anonymous at the Functions level: Git hosts and registries cannot all send a
function key, and each receiver authenticates its sender the way that sender signs (HMAC,
token, Basic auth) before the body is parsed. Each receiver is imported inside its function:
the worker imports this file at start-up, and pydantic models cost more than a cold start should.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from handlers.http_adapter import to_func, to_plain
from shared.app.runtime import runtime

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.intake.receivers.pipeline import ReceiverContext
    from shared.platform.http import HttpRequest, HttpResponse

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def _answer(
    receive: Callable[[HttpRequest, ReceiverContext], HttpResponse], req: func.HttpRequest
) -> func.HttpResponse:
    return to_func(receive(to_plain(req), runtime().receiver_context()))


@bp.function_name("github_webhook")
@bp.route(route="hooks/github", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def github_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import github

    return _answer(github.receive_github, req)


@bp.function_name("gitlab_webhook")
@bp.route(route="hooks/gitlab", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def gitlab_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import gitlab

    return _answer(gitlab.receive_gitlab, req)


@bp.function_name("azure_devops_webhook")
@bp.route(route="hooks/azure-devops", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def azure_devops_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import azure_devops

    return _answer(azure_devops.receive_azure_devops, req)


@bp.function_name("bitbucket_webhook")
@bp.route(route="hooks/bitbucket", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def bitbucket_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import bitbucket

    return _answer(bitbucket.receive_bitbucket, req)


@bp.function_name("gitea_webhook")
@bp.route(route="hooks/gitea", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def gitea_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import gitea

    return _answer(gitea.receive_gitea, req)


@bp.function_name("acr_webhook")
@bp.route(route="hooks/acr", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def acr_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import acr

    return _answer(acr.receive_acr, req)


# OPTIONS too: the CloudEvents abuse-protection handshake.
@bp.function_name("eventgrid_webhook")
@bp.route(route="hooks/eventgrid", methods=["POST", "OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
def eventgrid_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import eventgrid

    return _answer(eventgrid.receive_eventgrid, req)


@bp.function_name("dockerhub_webhook")
@bp.route(route="hooks/dockerhub", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def dockerhub_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.intake.receivers import dockerhub

    return _answer(dockerhub.receive_dockerhub, req)
