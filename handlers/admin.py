"""Admin HTTP functions (master key only): replay dead-lettered build requests."""

from __future__ import annotations

import json

import azure.functions as func

from shared.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("admin_replay")
@bp.route(route="admin/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def admin_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Body: ``{"ids": [...], "reason", "target", "since": "2h", "limit", "note", "dry_run"}``."""
    from shared.replay import replay_from_request

    principal = req.headers.get("x-ms-client-principal-name") or "admin-key"
    status, payload = replay_from_request(runtime(), req.get_body(), actor=f"http:{principal}")
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")
