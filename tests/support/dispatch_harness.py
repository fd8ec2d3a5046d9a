"""A controlled-clock dispatch rig: local queue + folder ledger/state + the real queue trigger.

Messages are delivered exactly as ``slipway serve`` delivers them (``LocalHost._deliver``: the
handler's return completes, any exception abandons, ``DispatchRefused`` included, as the Functions
host does), to the very function ``function_app.py`` registers. A refused message therefore comes
back until the local queue dead-letters it as ``MaxDeliveryCountExceeded``, as Service Bus would.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from shared.acr.run_backend import AcrBackend, RunBackend
from shared.app.local_host import LocalHost, QueueTrigger
from shared.app.runtime import Runtime, set_runtime
from shared.intake.rebuild_queue import send_requests
from shared.intake.routing import cache_names
from shared.model.build_request import BuildRequest
from shared.model.config import parse_config
from shared.model.tags import compute_tags
from shared.platform.ledger import FolderLedger, LedgerRecord
from shared.platform.queue.local import LocalQueue
from shared.platform.queue.port import ReceivedMessage
from shared.platform.state import FolderStateStore
from tests.support.acr_server import AcrServer, StaticTokenCredential

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "examples" / "build-request.json").read_text())
CONFIG = """
registry: slipway.azurecr.io
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  container: buildkit-cache
dispatch:
{dispatch}
targets:
  - name: azure-test
    repo: https://github.com/dougbu/AzureTest
    image: dougbu/azure-test
    branches: ["**"]
{target_extra}
"""


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def acr_backend_arguments(acr: AcrServer) -> dict[str, Any]:
    """``AcrBackend`` keyword arguments for the loopback server."""
    return {
        "subscription_id": "00000000-0000-0000-0000-000000000001",
        "resource_group": "rg-builds",
        "registry_name": "slipway",
        "credential": StaticTokenCredential(),
        "base_url": acr.base_url,
        "connection_verify": acr.ca_path,
    }


def acr_backend(acr: AcrServer) -> AcrBackend:
    backend = AcrBackend(**acr_backend_arguments(acr))
    backend.acr_server = acr  # type: ignore[attr-defined]
    return backend


def start_run_by_hand(rig: Rig, acr: AcrServer, *, created_at: datetime) -> str:
    """Somebody's run, started outside Slipway at ``created_at`` and unknown to the ledger (its
    ``slipwayRequestId`` is ``manual``): the run id. Beside an interrupted dispatch in the same
    minute, recovery cannot tell by time alone which run is the request's."""
    from shared.acr.task import render_run
    from shared.dispatch.dispatcher import resolve_secrets
    from shared.model.config import load_config

    config = load_config(Path(rig.settings["SLIPWAY_CONFIG"]))
    target = config.target("azure-test")
    assert target is not None
    spec = render_run(
        make_request(99, received_at=rig.clock()),
        config,
        resolve_secrets(config, target, rig.settings, required=True),
    )
    acr.clock = lambda: created_at
    try:
        return acr_backend(acr).start(spec, request_id="manual", correlation_id="manual").run_id
    finally:
        acr.clock = rig.clock


def make_request(n: int, *, received_at: datetime, ref: str = "refs/heads/master") -> BuildRequest:
    """A push of commit ``n`` to ``ref``; its id is unique per (ref, commit).

    Its tags and cache names are the ones routing gives that ref and commit under the rig's
    target: the dispatcher refuses a request that asks for more than its target allows.
    """
    body = json.loads(json.dumps(EXAMPLE))
    commit = hashlib.sha1(f"{ref}:{n}".encode()).hexdigest()  # noqa: S324 - a fake commit id
    body["id"] = f"azure-test.{hashlib.sha256(f'{ref}:{commit}'.encode()).hexdigest()[:32]}"
    body["source"]["commit"] = commit
    body["source"]["ref"] = ref
    rig_config = CONFIG.format(dispatch="  quiet_period: 0s", target_extra="")
    target = parse_config(rig_config, source="rig").targets[0]
    body["image"]["tags"] = compute_tags(target.image_tags, ref=ref, commit=commit, default_branch="master")
    body["cache"] = cache_names(target, ref=ref, default_branch="master").model_dump(mode="json")
    body["trigger"]["received_at"] = received_at.isoformat()
    body["coalesce_key"] = f"azure-test:{ref}"
    return BuildRequest.model_validate(body)


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        clock: Clock,
        backend: RunBackend,
        *,
        dispatch: str = "  quiet_period: 0s",
        target_extra: str = "",
        config: str | None = None,
    ) -> None:
        """``config``: the whole slipway.yaml instead of the rig's own (its one target)."""
        text = config if config is not None else CONFIG.format(dispatch=dispatch, target_extra=target_extra)
        (tmp_path / "slipway.yaml").write_text(text)
        self.clock = clock
        self.queue = LocalQueue(tmp_path / "queue.sqlite3", clock=clock)
        self.ledger = FolderLedger(tmp_path / "ledger")
        self.state = FolderStateStore(tmp_path / "state")
        self.backend = backend
        acr = getattr(backend, "acr_server", None)
        if acr is not None:
            acr.clock = clock  # the loopback ACR stamps run times on the same controlled clock
        self.settings = {
            "SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"),
            "SLIPWAY_CACHE_ACCOUNT_KEY": "c2VjcmV0LWtleS1kby1ub3QtbGVhaw==",
            "BUILD_QUEUE": "build-requests",
        }
        set_runtime(
            Runtime(
                self.settings,
                app_root=tmp_path,
                queue=self.queue,
                ledger=self.ledger,
                backend=backend,
                state=self.state,
                clock=clock,
            )
        )
        from handlers import dispatch as handler

        self.trigger = QueueTrigger(
            "dispatch", "build-requests", "msg", handler.dispatch.build().get_user_function()
        )

    def close(self) -> None:
        set_runtime(None)
        self.queue.close()

    def send(self, *requests: BuildRequest) -> None:
        send_requests(self.queue, list(requests), correlation_id="test", subject="push")

    def record(self, request_id: str) -> LedgerRecord:
        """The request's ledger record, which must exist."""
        found = self.ledger.get(request_id)
        assert found is not None, f"no ledger record for {request_id}"
        return found[0]

    def invoke(self, message: ReceivedMessage) -> None:
        """Call the trigger's function with ``message`` as the host would, without settling it."""
        from azure.functions.servicebus import ServiceBusMessage

        self.trigger.function(
            msg=ServiceBusMessage(
                body=message.body,
                message_id=message.message_id,
                delivery_count=message.delivery_count,
                application_properties={},
                user_properties={},
            )
        )

    def deliver_one(self) -> str | None:
        """Deliver one receivable message; its id, or None when there is none."""
        messages = self.queue.receive(max_count=1)
        if not messages:
            return None
        LocalHost._deliver(cast(Any, None), self.queue, self.trigger, messages[0])
        return messages[0].message_id

    def drain(self, *, limit: int = 10_000) -> list[str]:
        """Deliver until nothing is receivable now; the message ids delivered."""
        delivered: list[str] = []
        while len(delivered) < limit and (message_id := self.deliver_one()) is not None:
            delivered.append(message_id)
        return delivered

    def run_until_idle(self, *, step: float = 30.0, max_steps: int = 10_000) -> None:
        """Deliver, then move the clock on, until no message is left (scheduled ones included)."""
        for _ in range(max_steps):
            self.drain()
            if not self.queue.peek(max_count=1):
                return
            self.clock.advance(step)
        raise AssertionError("the queue never became idle")
