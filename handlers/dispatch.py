"""The queue trigger: one BuildRequest message in, at most one ACR run out."""

from __future__ import annotations

import azure.functions as func

from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class DispatchRetry(Exception):
    """Raised so the host abandons the message: Service Bus redelivers it (delivery count + 1)."""


class DispatchRefused(Exception):
    """A message that can never succeed (or gave up retrying).

    The stable binding (``func.ServiceBusMessage``, auto-complete) cannot dead-letter with a
    reason: on an exception the host abandons the message (Learn, "Azure Service Bus trigger
    for Azure Functions", PeekLock behavior). So the dispatcher keeps the reason in the ledger
    (``failure_reason``, ``error``) and raising lets Service Bus dead-letter the message after
    MaxDeliveryCount, as ``MaxDeliveryCountExceeded`` (each redelivery is refused again from the
    ledger, before any side effect). ``slipway serve`` does exactly the same, and ``slipway
    replay --reason`` matches the ledger's reason, so one runbook fits both.

    Not adopted: the SDK-type binding (``ServiceBusReceivedMessage`` plus a
    ``ServiceBusMessageActions`` parameter with ``deadletter(message, deadletter_reason=...)``,
    ``auto_complete_messages=False``; Azure/azure-functions-python-extensions,
    azurefunctions-extensions-bindings-servicebus/.../serviceBusMessageActions.py and
    samples/servicebus_samples_settlement). Learn lists Service Bus SDK types for Python as a
    trigger in *preview* (functions-reference-python.md, "SDK type bindings"); the package is
    pre-release only (1.0.0b2, pinned by Azure/azure-functions-python-worker#1767) and pulls uamqp,
    grpcio, grpcio-tools and protobuf>=6.32,<7 into the app (its pyproject.toml); settlement
    goes over the host's gRPC settlement service, and nothing we found documents it on Flex
    Consumption. A dead letter's reason is not worth a preview dependency on the dispatch path.
    """

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description


@bp.function_name("dispatch")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%BUILD_QUEUE%")
def dispatch(msg: func.ServiceBusMessage) -> None:
    """Returning completes the message: started, duplicate, superseded, cancelled, or rescheduled as a
    copy."""
    from shared.dispatch.dispatcher import Outcome

    rt = runtime()
    result = rt.dispatcher().dispatch(
        msg.get_body(), message_id=msg.message_id, delivery_count=msg.delivery_count or 1
    )
    if result.outcome is Outcome.RETRY:
        raise DispatchRetry(result.description or "transient failure")
    if result.outcome is Outcome.DEAD_LETTER:
        raise DispatchRefused(result.reason or "Refused", result.description or "")
