"""Admin HTTP functions (the host's master key only): replay dead-lettered build requests."""

from __future__ import annotations

import azure.functions as func

from handlers.http_adapter import to_func, to_plain
from shared.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("admin_replay")
@bp.route(route="admin/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def admin_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Body: ``{"ids": [...], "reason", "target", "since": "2h", "limit", "note", "dry_run"}``."""
    from shared.replay import receive_replay

    return to_func(receive_replay(to_plain(req), runtime()))
