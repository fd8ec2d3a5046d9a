"""azure.functions HTTP types to Slipway's plain ones and back, for every HTTP blueprint."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.platform.http import HttpRequest, HttpResponse


@cache
def _request_type() -> type[HttpRequest]:
    """Imported on the first request: defining its dataclasses costs milliseconds the cold start
    should not pay, and an import statement per webhook costs more than this lookup."""
    from shared.platform.http import HttpRequest

    return HttpRequest


def to_plain(req: func.HttpRequest) -> HttpRequest:
    headers = req.headers  # azure.functions' Mapping: a comprehension over its keys is its cheapest copy
    return _request_type()(
        method=req.method,
        url=req.url,
        headers={name: headers[name] for name in headers},
        body=req.get_body(),
        query=dict(req.params),
    )


def to_func(resp: HttpResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=resp.body_bytes(),
        status_code=resp.status,
        headers=resp.headers,
        mimetype="application/json",
    )
