"""Structured logs: one JSON object per line, always with the correlation id when there is one.

The correlation id starts at the webhook (the sender's delivery id when it has a safe one),
travels in the BuildRequest and the Service Bus message, and is stored with the ACR run, so
one search follows a delivery to its run.
"""

from __future__ import annotations

import json
import logging
from typing import Any

# Built once: json.dumps with separators makes a new encoder on every call (every log line).
_log_json = json.JSONEncoder(default=str, separators=(",", ":")).encode


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    correlation_id = fields.get("correlation_id")
    # ``extra`` carries the fields as record attributes for handlers that export dimensions.
    logger.log(
        level,
        _log_json(payload),
        extra={"slipway": payload, "correlation_id": correlation_id},
    )
