"""HTTP triggers for webhooks: translate azure.functions types, call the receiver, translate back.

Domain modules are imported inside the functions: the worker imports this file at start-up,
and pydantic models cost more than a cold start should.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.runtime import runtime

if TYPE_CHECKING:
    from shared.http import HttpRequest, HttpResponse

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def to_plain(req: func.HttpRequest) -> HttpRequest:
    from shared.http import HttpRequest

    return HttpRequest(
        method=req.method,
        url=req.url,
        headers=dict(req.headers.items()),
        body=req.get_body(),
        query=dict(req.params.items()),
    )


def to_func(resp: HttpResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=resp.body_bytes(),
        status_code=resp.status,
        headers=dict(resp.headers),
        mimetype="application/json",
    )


# Anonymous at the Functions level: GitHub cannot send a function key in a header, and the
# HMAC signature authenticates every delivery before its body is parsed.
@bp.function_name("github_webhook")
@bp.route(route="hooks/github", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def github_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.receivers.github import receive_github

    return to_func(receive_github(to_plain(req), runtime().receiver_context()))
