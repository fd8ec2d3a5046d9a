"""The build queue on Azure Service Bus: a thin mapping onto ``azure-servicebus``.

``azure.servicebus`` and ``azure.identity`` are imported only when a client is built or a
message is mapped, never at module import: the function app imports this module on every cold
start, and the SDK import alone costs far more than the webhook handler itself.

The SDK client is created once, on first use, and reused (the Functions worker keeps the
process). SDK clients are not thread-safe, so every call takes one lock; webhook traffic is
far too small for that to matter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.platform import identity
from shared.platform.queue.port import (
    NOT_LOCKED,
    DeadLetterChoice,
    MessageState,
    OutgoingMessage,
    PropertyValue,
    QueueError,
    ReceivedMessage,
    copy_to_send,
)

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far the coalescing look-ahead peeks; a build queue longer than this is already in trouble.
PENDING_PEEK_LIMIT = 1000


class SenderLike(Protocol):
    """The part of ``ServiceBusSender`` used here (tests pass a fake)."""

    def send_messages(self, message: list[ServiceBusMessage], /) -> None: ...

    def cancel_scheduled_messages(self, sequence_numbers: list[int], /) -> None: ...

    def close(self) -> None: ...


class ReceiverLike(Protocol):
    """The part of ``ServiceBusReceiver`` used here."""

    def peek_messages(
        self, max_message_count: int = 1, *, sequence_number: int = 0
    ) -> list[ServiceBusReceivedMessage]: ...

    def close(self) -> None: ...

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]: ...

    def complete_message(self, message: ServiceBusReceivedMessage, /) -> None: ...

    def abandon_message(self, message: ServiceBusReceivedMessage, /) -> None: ...


class ClientLike(Protocol):
    """The part of ``ServiceBusClient`` used here."""

    def get_queue_sender(self, queue_name: str, /) -> SenderLike: ...

    def get_queue_receiver(
        self, queue_name: str, /, *, sub_queue: ServiceBusSubQueue | None = None
    ) -> ReceiverLike: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServiceBusConnection:
    """How to reach the namespace, resolved from app settings the way the Functions host does it.

    Identity-based when ``<connection>__fullyQualifiedNamespace`` is set (``client_id`` selects a
    user-assigned identity), otherwise the ``<connection>`` connection string.
    """

    namespace: str | None = None
    client_id: str | None = None
    managed_identity_only: bool = False  # ``<connection>__credential=managedidentity``, as the host
    connection_string: str | None = field(default=None, repr=False)  # a secret: never in logs

    @property
    def uses_identity(self) -> bool:
        return self.namespace is not None

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, str], connection: str = "ServiceBusConnection"
    ) -> ServiceBusConnection:
        """Pick the connection the same way a binding with ``connection=<connection>`` would."""
        namespace = settings.get(f"{connection}__fullyQualifiedNamespace", "").strip()
        if namespace:
            # Accept what people paste: ``sb://ns.servicebus.windows.net/`` as well as the bare host.
            namespace = namespace.removeprefix("sb://").removeprefix("https://").rstrip("/")
            return cls(
                namespace=namespace,
                client_id=identity.client_id(settings, connection),
                managed_identity_only=identity.managed_identity_only(settings, connection),
            )
        connection_string = settings.get(connection, "").strip()
        if connection_string:
            return cls(connection_string=connection_string)
        raise QueueError(
            f"Service Bus is not configured: set {connection}__fullyQualifiedNamespace (identity-based; "
            f"add {connection}__clientId for a user-assigned identity) or {connection} (a connection string)"
        )

    def create_client(self) -> ClientLike:
        """Build the SDK client; this does not connect (the SDK connects on first send or receive)."""
        from azure.servicebus import ServiceBusClient

        if self.namespace is not None:
            credential = identity.build_credential(
                self.client_id, managed_identity_only=self.managed_identity_only
            )
            return ServiceBusClient(self.namespace, credential)
        if self.connection_string is None:
            raise QueueError("ServiceBusConnection has neither a namespace nor a connection string")
        return ServiceBusClient.from_connection_string(self.connection_string)


class ServiceBusQueue:
    """Sends build requests to, and browses, one Service Bus queue (the Functions trigger receives)."""

    def __init__(self, client_factory: Callable[[], ClientLike], *, queue_name: str) -> None:
        """``client_factory`` is called once, lazily, so constructing this never touches the network."""
        self.queue_name = queue_name
        self._client_factory = client_factory
        self._client: ClientLike | None = None
        self._sender: SenderLike | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, str], *, connection: str = "ServiceBusConnection", queue_name: str
    ) -> ServiceBusQueue:
        """Identity-based if ``<connection>__fullyQualifiedNamespace`` is set, else the connection string."""
        return cls(
            ServiceBusConnection.from_settings(settings, connection).create_client, queue_name=queue_name
        )

    def _client_locked(self) -> ClientLike:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _sender_locked(self) -> SenderLike:
        if self._sender is None:
            self._sender = self._client_locked().get_queue_sender(self.queue_name)
        return self._sender

    def _drop_sender_locked(self) -> None:
        """After a failure, start the next call on a fresh link rather than a possibly broken one."""
        sender, self._sender = self._sender, None
        if sender is not None:
            with suppress(Exception):  # closing a broken link may fail too; nothing to do about it
                sender.close()

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send one batch (Service Bus accepts or refuses it whole); SDK errors become QueueError."""
        if not messages:
            return
        sdk_messages = [to_sdk_message(message) for message in messages]
        with self._lock, _translated("send to", self.queue_name):
            try:
                self._sender_locked().send_messages(sdk_messages)
            except Exception:
                self._drop_sender_locked()
                raise

    def cancel_scheduled(self, sequence_number: int) -> None:
        """Cancel a scheduled message by the sequence number ``peek`` shows."""
        with self._lock, _translated("cancel a scheduled message on", self.queue_name):
            try:
                self._sender_locked().cancel_scheduled_messages([sequence_number])
            except Exception:
                self._drop_sender_locked()
                raise

    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]:
        """Browse without locking, paging by sequence number until ``max_count`` or the end."""
        from azure.servicebus import ServiceBusSubQueue

        sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
        found: list[ReceivedMessage] = []
        with self._lock, _translated("peek", self.queue_name):
            receiver = self._client_locked().get_queue_receiver(self.queue_name, sub_queue=sub_queue)
            try:
                next_sequence = 0
                while len(found) < max_count:
                    batch = receiver.peek_messages(max_count - len(found), sequence_number=next_sequence)
                    if not batch:
                        break
                    found.extend(from_sdk_message(message) for message in batch)
                    next_sequence = found[-1].sequence_number + 1
            finally:
                receiver.close()
        return found

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]:
        """Bodies of queued messages (scheduled ones included) whose BuildRequest has ``coalesce_key``.

        Peeks the queue (up to ``PENDING_PEEK_LIMIT`` messages): build queues are short, and this
        keeps the webhook path free of any extra write.
        """
        found = []
        for message in self.peek(max_count=PENDING_PEEK_LIMIT):
            try:
                body = json.loads(message.body)
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("coalesce_key") == coalesce_key:
                found.append(message.body)
        return found

    def settle_dead_letters(
        self, choose: Callable[[ReceivedMessage], DeadLetterChoice], *, max_count: int = 1000
    ) -> list[tuple[ReceivedMessage, OutgoingMessage | None]]:
        """Replay from the dead-letter sub-queue: receive (peek-lock), then as ``choose`` says: send
        a copy and complete, complete only (``DeadLetterAction.COMPLETE``), or leave (None).

        Messages left are abandoned at the end (not at once: the receiver would hand them out
        again in the same pass). Send and complete are not atomic (no transactions in the Python
        SDK); a crash between them leaves a dead letter the dispatcher's ledger absorbs.
        """
        from azure.servicebus import ServiceBusSubQueue

        settled: list[tuple[ReceivedMessage, OutgoingMessage | None]] = []
        with self._lock, _translated("replay dead letters of", self.queue_name):
            receiver = self._client_locked().get_queue_receiver(
                self.queue_name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            )
            skipped = []
            try:
                seen = 0
                while seen < max_count:
                    batch = receiver.receive_messages(
                        max_message_count=min(100, max_count - seen), max_wait_time=5
                    )
                    if not batch:
                        break
                    seen += len(batch)
                    for sdk_message in batch:
                        message = from_sdk_message(sdk_message)
                        choice = choose(message)
                        if choice is None:
                            skipped.append(sdk_message)
                            continue
                        copy = copy_to_send(choice)
                        if copy is not None:
                            self._sender_locked().send_messages([to_sdk_message(copy)])
                        receiver.complete_message(sdk_message)
                        settled.append((message, copy))
            finally:
                for sdk_message in skipped:
                    with suppress(Exception):  # the lock expires anyway; the message stays
                        receiver.abandon_message(sdk_message)
                receiver.close()
        return settled

    def close(self) -> None:
        """Close the link and the connection (the Functions worker normally never does)."""
        with self._lock:
            self._drop_sender_locked()
            client, self._client = self._client, None
        if client is not None:
            client.close()


@contextmanager
def _translated(action: str, queue_name: str) -> Iterator[None]:
    """Azure SDK errors become QueueError, so webhook receivers answer 503 and the sender retries."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except AzureError as exc:
        raise QueueError(f"cannot {action} Service Bus queue {queue_name!r}: {exc}") from exc


def to_sdk_message(message: OutgoingMessage) -> ServiceBusMessage:
    """Every OutgoingMessage field, onto the SDK message."""
    from azure.servicebus import ServiceBusMessage

    properties: dict[str | bytes, Any] = {key: value for key, value in message.application_properties.items()}
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        content_type=message.content_type,
        subject=message.subject,
        correlation_id=message.correlation_id,
        application_properties=properties or None,
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time,
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _body(body: object) -> bytes:
    """Received data bodies come as bytes or an iterable of byte sections; join them."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, Iterable):
        return b"".join(bytes(part) if not isinstance(part, str) else part.encode() for part in body)
    return str(body).encode()


def _property(value: object) -> PropertyValue:
    if isinstance(value, bool | int | float | str):
        return value
    return _text(value)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else (value.replace(tzinfo=UTC) if value.tzinfo is None else value)


def from_sdk_message(message: ServiceBusReceivedMessage) -> ReceivedMessage:
    """A peeked SDK message as a ReceivedMessage; received keys and string values arrive as bytes."""
    properties = {
        _text(key): _property(value) for key, value in (message.application_properties or {}).items()
    }
    state_name = getattr(message.state, "name", "ACTIVE")
    enqueued = _utc(message.enqueued_time_utc)
    return ReceivedMessage(
        message_id=_text(message.message_id) if message.message_id is not None else "",
        body=_body(message.body),
        content_type=message.content_type,
        subject=message.subject,
        correlation_id=message.correlation_id,
        application_properties=properties,
        scheduled_enqueue_time=_utc(message.scheduled_enqueue_time_utc),
        sequence_number=message.sequence_number or 0,
        delivery_count=message.delivery_count or 0,
        enqueued_time=enqueued if enqueued is not None else _EPOCH,
        lock_token="",
        locked_until=NOT_LOCKED,
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_description=message.dead_letter_error_description,
        state=MessageState[state_name] if state_name in MessageState.__members__ else MessageState.ACTIVE,
    )
