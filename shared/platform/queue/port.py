"""The build queue as the rest of Slipway sees it: messages, a sender, a browser, a receiver.

Two adapters implement it: :mod:`shared.platform.queue.servicebus` (Azure) and
:mod:`shared.platform.queue.local` (SQLite, same semantics, for ``slipway serve`` and the
tests). The vocabulary follows Service Bus on purpose, so code written against the local queue
behaves the same in Azure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Protocol, runtime_checkable

from shared.platform.errors import ServiceError

PropertyValue = str | int | float | bool

# Service Bus's limit on MessageId; checked here so both adapters refuse the same ids.
MAX_MESSAGE_ID_LENGTH = 128

# ``locked_until`` of a message that holds no lock (peeked): a fixed, obviously past instant
# rather than ``None``, so consumers never need a None check on a received message.
NOT_LOCKED = datetime(1970, 1, 1, tzinfo=UTC)

# Service Bus's system dead-letter reason, kept verbatim so runbooks and queries match.
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"

# The build queue Slipway assumes. ``infra/app/servicebus.bicep`` creates the Service Bus queue
# with these values (a test compares them) and the local queue behaves the same by default.
# Lock: the Functions host renews it while an invocation runs, so it only decides how soon a
# crashed worker's message comes back. Deliveries: a refused message is refused again from the
# ledger on every delivery, so this many cheap deliveries take it to the dead-letter queue.
# Window: longer than any delayed retry (``dispatch.backoff_max``), so a re-sent copy is dropped.
QUEUE_LOCK_DURATION = timedelta(minutes=1)
QUEUE_MAX_DELIVERY_COUNT = 10
QUEUE_DUPLICATE_DETECTION_WINDOW = timedelta(minutes=10)


class QueueError(ServiceError):
    """The queue cannot do what was asked (unreachable, misconfigured, unknown message)."""


class LockLostError(QueueError):
    """Settling with a lock token that expired or was superseded by a redelivery."""


class MessageState(StrEnum):
    """Mirrors ``azure.servicebus.ServiceBusMessageState``: peek shows scheduled messages too."""

    ACTIVE = "active"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to send; ``message_id`` is the duplicate-detection key, so make it deterministic."""

    message_id: str
    body: bytes
    content_type: str = "application/json"
    subject: str | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None

    def __post_init__(self) -> None:
        """Refuse at construction what Service Bus would refuse at send time, far from the cause."""
        if not self.message_id or len(self.message_id) > MAX_MESSAGE_ID_LENGTH:
            raise ValueError(f"message_id must be 1..{MAX_MESSAGE_ID_LENGTH} characters")
        _check_aware("scheduled_enqueue_time", self.scheduled_enqueue_time)


@dataclass(frozen=True, kw_only=True)
class ReceivedMessage:
    """A message as a receiver or a browser sees it.

    Keyword-only: it has too many fields to build positionally without mistakes. A peeked
    message holds no lock: ``lock_token`` is ``""`` and ``locked_until`` is :data:`NOT_LOCKED`
    unless someone else currently holds it. ``state`` tells a peeked scheduled message
    (``MessageState.SCHEDULED``) from one that can be received now.
    """

    message_id: str
    body: bytes
    content_type: str | None = "application/json"
    subject: str | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None
    sequence_number: int
    delivery_count: int
    enqueued_time: datetime
    lock_token: str
    locked_until: datetime
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    state: MessageState = MessageState.ACTIVE

    @property
    def is_scheduled(self) -> bool:
        return self.state is MessageState.SCHEDULED


class DeadLetterAction(Enum):
    """What a replay tool may do with a dead letter besides re-sending a copy of it."""

    # Remove it and send nothing: the request it stands for needs nothing more (it ran, or another
    # dead letter of it is replayed). The DLQ keeps a message "until you explicitly retrieve them
    # from the DLQ and complete the dead-letter message" (Learn, "Overview of Service Bus
    # dead-letter queues", https://learn.microsoft.com/azure/service-bus-messaging/service-bus-dead-letter-queues).
    COMPLETE = "complete"


# A replay tool's answer for one locked dead letter: a copy to send before completing it,
# COMPLETE to complete it with no copy, or None to leave it where it is.
DeadLetterChoice = OutgoingMessage | DeadLetterAction | None


def copy_to_send(choice: DeadLetterChoice) -> OutgoingMessage | None:
    """The copy a choice asks to send (None: complete only, or leave)."""
    return choice if isinstance(choice, OutgoingMessage) else None


@runtime_checkable
class QueueSender(Protocol):
    """What webhook receivers need: send a batch (all or nothing); scheduled ones have a time."""

    def send(self, messages: Sequence[OutgoingMessage]) -> None: ...


@runtime_checkable
class QueueBrowser(Protocol):
    """Non-destructive look at the queue or its dead-letter sub-queue (status, replay tools)."""

    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]: ...


@runtime_checkable
class QueueReceiver(Protocol):
    """Peek-lock consumption, as the local host drives it (in Azure the Functions host does this)."""

    def receive(self, max_count: int = 1) -> list[ReceivedMessage]: ...

    def complete(self, message: ReceivedMessage) -> None: ...

    def abandon(self, message: ReceivedMessage) -> None: ...

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None: ...

    def renew_lock(self, message: ReceivedMessage) -> datetime: ...
