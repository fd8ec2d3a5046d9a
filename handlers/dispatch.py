"""The queue trigger: one BuildRequest message in, at most one ACR run out."""

from __future__ import annotations

import azure.functions as func

from shared.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class DispatchRetry(Exception):
    """Raised so the host abandons the message: Service Bus redelivers it (delivery count + 1)."""


class DispatchRefused(Exception):
    """A message that can never succeed (or gave up retrying).

    The stable Python binding cannot dead-letter with a reason, so the reason is logged and kept
    in the ledger (``failure_reason``, ``error``), and raising lets Service Bus move the message
    to the dead-letter queue after MaxDeliveryCount (each redelivery is refused again from the
    ledger, before any side effect). The local host reads ``reason`` and ``description`` and
    dead-letters at once, as Service Bus would with an explicit dead-letter.
    """

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description


@bp.function_name("dispatch")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%BUILD_QUEUE%")
def dispatch(msg: func.ServiceBusMessage) -> None:
    """Returning completes the message: started, duplicate, superseded, or rescheduled as a copy."""
    from shared.dispatcher import Outcome

    result = (
        runtime()
        .dispatcher()
        .dispatch(msg.get_body(), message_id=msg.message_id, delivery_count=msg.delivery_count or 1)
    )
    if result.outcome is Outcome.RETRY:
        raise DispatchRetry(result.description or "transient failure")
    if result.outcome is Outcome.DEAD_LETTER:
        raise DispatchRefused(result.reason or "Refused", result.description or "")
