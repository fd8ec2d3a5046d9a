"""azure.functions HTTP types to Slipway's plain ones and back, for every HTTP blueprint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.http import HttpRequest, HttpResponse


def to_plain(req: func.HttpRequest) -> HttpRequest:
    # Imported here: defining its dataclasses costs milliseconds the cold start should not pay.
    from shared.http import HttpRequest

    # azure.functions keeps the headers lower-cased in a plain dict: copying it skips a Mapping walk.
    lowered = getattr(req.headers, "__http_headers__", None)
    return HttpRequest(
        method=req.method,
        url=req.url,
        headers=dict(lowered) if isinstance(lowered, dict) else dict(req.headers.items()),
        body=req.get_body(),
        query=dict(req.params.items()),
    )


def to_func(resp: HttpResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=resp.body_bytes(),
        status_code=resp.status,
        headers=resp.headers,
        mimetype="application/json",
    )
