"""Operator HTTP functions (the host's master key only): replay dead-lettered build requests.

The routes live under ``ops/``, not ``admin/``: the Functions host refuses any function route that
starts with ``admin`` or ``runtime`` (its own API), whatever the route prefix, and leaves the
function in error, so the URL answers 404 (Azure/azure-functions-host,
src/WebJobs.Script/Host/ScriptHost.cs, ``ValidateHttpFunction``). tests/test_function_app.py
checks every route against those prefixes.

``AuthLevel.ADMIN``: only the master key carries the Admin level (host's ``SecretManager``
``GetAuthorizationLevelAsync``), and an Admin requirement is met by nothing less
(``AuthUtility.PrincipalHasAuthLevelClaim``): function and host keys are refused.
"""

from __future__ import annotations

import azure.functions as func

from handlers.http_adapter import to_func, to_plain
from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("ops_replay")
@bp.route(route="ops/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def ops_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Body: ``{"ids": [...], "reason", "target", "since": "2h", "limit", "note", "dry_run"}``."""
    from shared.dispatch.replay import ReplaySources, receive_replay

    rt = runtime()
    sources = ReplaySources(queue=rt.queue, ledger=rt.ledger, settings=rt.settings)
    return to_func(receive_replay(to_plain(req), sources))
