"""azure.functions HTTP types to Slipway's plain ones and back, for every HTTP blueprint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.http import HttpRequest, HttpResponse


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
