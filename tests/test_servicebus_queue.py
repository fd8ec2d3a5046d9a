"""The Service Bus adapter: field mapping onto real SDK messages, settings → credential, lazy import.

No network: the client is a fake, except where a real ``ServiceBusClient`` is only constructed
(which does not connect) to check what ``from_settings`` would hand the SDK.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusMessageState, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusConnectionError

from shared.platform.queue import (
    NOT_LOCKED,
    DeadLetterAction,
    DeadLetterChoice,
    MessageState,
    OutgoingMessage,
    QueueBrowser,
    QueueError,
    QueueSender,
    ServiceBusConnection,
    ServiceBusQueue,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONNECTION_STRING = (
    "Endpoint=sb://slipway-test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
)


class FakeSender:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batches: list[list[ServiceBusMessage]] = []
        self.cancelled: list[list[int]] = []
        self.closed = False
        self.fail_with = fail_with

    def send_messages(self, message: list[ServiceBusMessage], /) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(message)

    def cancel_scheduled_messages(self, sequence_numbers: list[int], /) -> None:
        self.cancelled.append(sequence_numbers)

    def close(self) -> None:
        self.closed = True


class FakeReceiver:
    def __init__(self, messages: list[Any], page: int) -> None:
        self.messages = messages
        self.page = page
        self.calls: list[tuple[int, int]] = []
        self.closed = False
        self.locked: set[int] = set()
        self.completed: list[Any] = []
        self.abandoned: list[Any] = []

    def peek_messages(self, max_message_count: int = 1, *, sequence_number: int = 0) -> list[Any]:
        self.calls.append((max_message_count, sequence_number))
        later = [m for m in self.messages if m.sequence_number >= sequence_number]
        return later[: min(max_message_count, self.page)]

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[Any]:
        """Peek-lock: hand out messages not yet handed out, as the service would within one lock."""
        ready = [m for m in self.messages if id(m) not in self.locked and m not in self.completed]
        batch = ready[: max_message_count or 1]
        self.locked.update(id(m) for m in batch)
        return batch

    def complete_message(self, message: Any, /) -> None:
        self.completed.append(message)

    def abandon_message(self, message: Any, /) -> None:
        self.abandoned.append(message)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self, senders: list[FakeSender] | None = None, peekable: list[Any] | None = None) -> None:
        self.senders = senders if senders is not None else [FakeSender()]
        self.sender_requests: list[str] = []
        self.receivers: list[tuple[str, ServiceBusSubQueue | None, FakeReceiver]] = []
        self.peekable = peekable or []
        self.closed = False

    def get_queue_sender(self, queue_name: str, /) -> FakeSender:
        self.sender_requests.append(queue_name)
        return self.senders[len(self.sender_requests) - 1]

    def get_queue_receiver(
        self, queue_name: str, /, *, sub_queue: ServiceBusSubQueue | None = None
    ) -> FakeReceiver:
        receiver = FakeReceiver(self.peekable, page=2)
        self.receivers.append((queue_name, sub_queue, receiver))
        return receiver

    def close(self) -> None:
        self.closed = True


def make_queue(client: FakeClient) -> tuple[ServiceBusQueue, list[int]]:
    created: list[int] = []

    def factory() -> FakeClient:
        created.append(1)
        return client

    return ServiceBusQueue(factory, queue_name="build-requests"), created


# --- sending ---------------------------------------------------------------------------------


def test_implements_the_ports() -> None:
    queue, _ = make_queue(FakeClient())
    sender: QueueSender = queue
    browser: QueueBrowser = queue
    assert isinstance(sender, QueueSender) and isinstance(browser, QueueBrowser)


def test_send_maps_every_field_onto_real_sdk_messages() -> None:
    client = FakeClient()
    queue, _ = make_queue(client)
    due = T0 + timedelta(minutes=5)
    queue.send(
        [
            OutgoingMessage(
                message_id="req-1",
                body=b'{"repo": "org/app"}',
                content_type="application/json",
                subject="git-push",
                correlation_id="delivery-7",
                application_properties={"repo": "org/app", "attempt": 2, "ratio": 0.5, "forced": True},
                scheduled_enqueue_time=due,
            ),
            OutgoingMessage(message_id="req-2", body=b"{}"),
        ]
    )
    assert client.sender_requests == ["build-requests"]
    [[full, minimal]] = client.senders[0].batches
    assert type(full) is ServiceBusMessage
    assert b"".join(full.body) == b'{"repo": "org/app"}'
    assert full.message_id == "req-1"
    assert full.content_type == "application/json"
    assert full.subject == "git-push"
    assert full.correlation_id == "delivery-7"
    assert full.application_properties == {"repo": "org/app", "attempt": 2, "ratio": 0.5, "forced": True}
    assert full.scheduled_enqueue_time_utc == due
    assert minimal.message_id == "req-2"
    assert minimal.content_type == "application/json"
    assert minimal.subject is None and minimal.correlation_id is None
    assert minimal.application_properties is None
    assert minimal.scheduled_enqueue_time_utc is None


def test_the_client_and_sender_are_built_once_and_lazily() -> None:
    client = FakeClient()
    queue, created = make_queue(client)
    queue.send([])
    assert created == []
    queue.send([OutgoingMessage(message_id="a", body=b"{}")])
    queue.send([OutgoingMessage(message_id="b", body=b"{}")])
    assert created == [1] and client.sender_requests == ["build-requests"]
    assert len(client.senders[0].batches) == 2
    queue.close()
    assert client.senders[0].closed and client.closed


def test_sdk_errors_become_queue_errors_and_the_link_is_replaced() -> None:
    broken = FakeSender(fail_with=ServiceBusConnectionError(message="amqp link detached"))
    healthy = FakeSender()
    client = FakeClient(senders=[broken, healthy])
    queue, _ = make_queue(client)
    with pytest.raises(QueueError, match="amqp link detached") as caught:
        queue.send([OutgoingMessage(message_id="a", body=b"{}")])
    assert isinstance(caught.value.__cause__, ServiceBusConnectionError)
    assert broken.closed
    queue.send([OutgoingMessage(message_id="a", body=b"{}")])
    assert len(healthy.batches) == 1


def test_non_azure_errors_are_not_disguised() -> None:
    queue, _ = make_queue(FakeClient(senders=[FakeSender(fail_with=TypeError("bug"))]))
    with pytest.raises(TypeError):
        queue.send([OutgoingMessage(message_id="a", body=b"{}")])


def test_cancel_scheduled() -> None:
    client = FakeClient()
    queue, _ = make_queue(client)
    queue.cancel_scheduled(42)
    assert client.senders[0].cancelled == [[42]]


# --- peeking ---------------------------------------------------------------------------------


def sdk_message(sequence_number: int, **overrides: Any) -> SimpleNamespace:
    """What a peeked ServiceBusReceivedMessage looks like (received keys and strings come as bytes)."""
    fields: dict[str, Any] = {
        "message_id": f"req-{sequence_number}",
        "body": (part for part in [b'{"a":', b" 1}"]),
        "content_type": "application/json",
        "subject": "git-push",
        "correlation_id": "delivery-7",
        "application_properties": {b"repo": b"org/app", b"attempt": 2, b"forced": True},
        "scheduled_enqueue_time_utc": None,
        "sequence_number": sequence_number,
        "delivery_count": 0,
        "enqueued_time_utc": T0,
        "lock_token": None,
        "locked_until_utc": None,
        "dead_letter_reason": None,
        "dead_letter_error_description": None,
        "state": ServiceBusMessageState.ACTIVE,
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_peek_maps_sdk_messages_and_pages_by_sequence_number() -> None:
    due = T0 + timedelta(hours=1)
    client = FakeClient(
        peekable=[
            sdk_message(3),
            sdk_message(5, state=ServiceBusMessageState.SCHEDULED, scheduled_enqueue_time_utc=due),
            sdk_message(9, application_properties=None, content_type=None),
        ]
    )
    queue, _ = make_queue(client)
    first, scheduled, bare = queue.peek(max_count=10)
    [(name, sub_queue, receiver)] = client.receivers
    assert (name, sub_queue, receiver.closed) == ("build-requests", None, True)
    assert receiver.calls == [(10, 0), (8, 6), (7, 10)]  # pages of 2, then an empty page ends it
    assert first.message_id == "req-3" and first.sequence_number == 3
    assert first.body == b'{"a": 1}'
    assert first.application_properties == {"repo": "org/app", "attempt": 2, "forced": True}
    assert (first.content_type, first.subject, first.correlation_id) == (
        "application/json",
        "git-push",
        "delivery-7",
    )
    assert first.enqueued_time == T0 and first.delivery_count == 0
    assert first.lock_token == "" and first.locked_until == NOT_LOCKED
    assert first.state is MessageState.ACTIVE
    assert scheduled.state is MessageState.SCHEDULED and scheduled.scheduled_enqueue_time == due
    assert bare.application_properties == {} and bare.content_type is None


def test_peek_stops_at_max_count() -> None:
    client = FakeClient(peekable=[sdk_message(i) for i in range(1, 6)])
    queue, _ = make_queue(client)
    assert [m.sequence_number for m in queue.peek(max_count=3)] == [1, 2, 3]


def test_peek_dead_letter_uses_the_sub_queue_and_keeps_the_reason() -> None:
    client = FakeClient(
        peekable=[
            sdk_message(
                4,
                delivery_count=10,
                dead_letter_reason="MaxDeliveryCountExceeded",
                dead_letter_error_description="Message could not be consumed after 10 delivery attempts.",
            )
        ]
    )
    queue, _ = make_queue(client)
    [dead] = queue.peek(dead_letter=True)
    assert client.receivers[0][1] is ServiceBusSubQueue.DEAD_LETTER
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_description == "Message could not be consumed after 10 delivery attempts."
    assert dead.delivery_count == 10


def test_pending_with_coalesce_key_finds_queued_and_scheduled_requests_by_key() -> None:
    def request(sequence: int, key: str, **overrides: Any) -> SimpleNamespace:
        return sdk_message(
            sequence, body=[f'{{"coalesce_key": "{key}", "n": {sequence}}}'.encode()], **overrides
        )

    due = T0 + timedelta(seconds=30)
    client = FakeClient(
        peekable=[
            request(1, "web:refs/heads/main"),
            request(2, "web:refs/heads/dev"),
            request(
                3,
                "web:refs/heads/main",
                state=ServiceBusMessageState.SCHEDULED,
                scheduled_enqueue_time_utc=due,
            ),
            sdk_message(4, body=[b"not json"]),
        ]
    )
    queue, _ = make_queue(client)
    found = queue.pending_with_coalesce_key("web:refs/heads/main")
    assert [json.loads(body)["n"] for body in found] == [1, 3]


def test_settle_dead_letters_sends_copies_then_completes_completes_only_and_abandons_the_rest() -> None:
    client = FakeClient(
        peekable=[
            sdk_message(7, message_id="web.abc", dead_letter_reason="RetriesExhausted"),
            sdk_message(8, message_id="api.def", dead_letter_reason="UnknownTarget"),
            sdk_message(9, message_id="web.abc-a1", dead_letter_reason="RetriesExhausted"),
        ]
    )
    queue, _ = make_queue(client)

    def choose(message: Any) -> DeadLetterChoice:
        if message.message_id == "web.abc-a1":  # another dead letter of the request replayed
            return DeadLetterAction.COMPLETE
        if not message.message_id.startswith("web."):
            return None
        return OutgoingMessage(message_id=f"{message.message_id}-r1", body=message.body)

    settled = queue.settle_dead_letters(choose)
    assert [(m.message_id, m.dead_letter_reason, c and c.message_id) for m, c in settled] == [
        ("web.abc", "RetriesExhausted", "web.abc-r1"),
        ("web.abc-a1", "RetriesExhausted", None),
    ]
    [(_name, sub_queue, receiver)] = client.receivers
    assert sub_queue is ServiceBusSubQueue.DEAD_LETTER and receiver.closed
    [[sent]] = client.senders[0].batches  # the one copy; completing only sends nothing
    assert sent.message_id == "web.abc-r1"
    assert [m.message_id for m in receiver.completed] == ["web.abc", "web.abc-a1"]
    assert [m.message_id for m in receiver.abandoned] == ["api.def"]  # stays in the dead-letter queue


# --- settings → connection -------------------------------------------------------------------


def test_identity_when_the_namespace_is_set() -> None:
    connection = ServiceBusConnection.from_settings(
        {
            "ServiceBusConnection__fullyQualifiedNamespace": "sb://slipway.servicebus.windows.net/",
            "ServiceBusConnection": CONNECTION_STRING,  # identity wins, as in the Functions host
        }
    )
    assert connection.uses_identity
    assert connection.namespace == "slipway.servicebus.windows.net"
    assert connection.client_id is None
    assert "SharedAccessKey" not in repr(connection)


@pytest.mark.parametrize(
    ("settings", "client_id"),
    [
        ({"ServiceBusConnection__clientId": "uami-1"}, "uami-1"),
        ({"AZURE_CLIENT_ID": "uami-2"}, "uami-2"),
        ({"ServiceBusConnection__clientId": "uami-1", "AZURE_CLIENT_ID": "uami-2"}, "uami-1"),
        ({"ServiceBusConnection__clientId": ""}, None),
    ],
)
def test_user_assigned_identity(settings: dict[str, str], client_id: str | None) -> None:
    settings = {"ServiceBusConnection__fullyQualifiedNamespace": "slipway.servicebus.windows.net", **settings}
    assert ServiceBusConnection.from_settings(settings).client_id == client_id


def test_connection_string_is_the_fallback() -> None:
    connection = ServiceBusConnection.from_settings({"ServiceBusConnection": CONNECTION_STRING})
    assert not connection.uses_identity
    assert connection.connection_string == CONNECTION_STRING
    assert "c2VjcmV0" not in repr(connection)


def test_a_custom_connection_name() -> None:
    settings = {"Other__fullyQualifiedNamespace": "other.servicebus.windows.net"}
    assert ServiceBusConnection.from_settings(settings, "Other").namespace == "other.servicebus.windows.net"


@pytest.mark.parametrize(
    "settings", [{}, {"ServiceBusConnection": " ", "ServiceBusConnection__fullyQualifiedNamespace": ""}]
)
def test_missing_settings_name_both_choices(settings: dict[str, str]) -> None:
    with pytest.raises(QueueError) as caught:
        ServiceBusQueue.from_settings(settings, queue_name="build-requests")
    message = str(caught.value)
    assert "ServiceBusConnection__fullyQualifiedNamespace" in message
    assert "ServiceBusConnection__clientId" in message
    assert "ServiceBusConnection (a connection string)" in message


class RecordingCredential:
    """Stands in for DefaultAzureCredential: records how it was built, never fetches a token."""

    instances: ClassVar[list[RecordingCredential]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        RecordingCredential.instances.append(self)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no token may be requested in a unit test")


def test_identity_builds_a_client_with_default_azure_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    RecordingCredential.instances.clear()
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingCredential)
    queue = ServiceBusQueue.from_settings(
        {
            "ServiceBusConnection__fullyQualifiedNamespace": "slipway.servicebus.windows.net",
            "ServiceBusConnection__clientId": "uami-1",
        },
        queue_name="build-requests",
    )
    assert RecordingCredential.instances == []  # nothing is built before first use
    client = queue._client_locked()
    assert isinstance(client, ServiceBusClient)
    assert client.fully_qualified_namespace == "slipway.servicebus.windows.net"
    [credential] = RecordingCredential.instances
    assert credential.kwargs == {"managed_identity_client_id": "uami-1"}
    client.close()


def test_connection_string_builds_a_client_without_connecting() -> None:
    connection = ServiceBusConnection.from_settings({"ServiceBusConnection": CONNECTION_STRING})
    client = connection.create_client()
    assert isinstance(client, ServiceBusClient)
    assert client.fully_qualified_namespace == "slipway-test.servicebus.windows.net"
    client.close()


# --- import cost -----------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_the_sdk() -> None:
    script = (
        "import sys\n"
        "import shared.platform.queue, shared.platform.queue.servicebus, shared.platform.queue.port\n"
        "from shared.platform.queue import ServiceBusQueue\n"
        "heavy = ('azure.servicebus', 'azure.identity', 'azure.core', 'sqlite3')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
