"""End to end under a burst: signed GitHub pushes into ``slipway serve`` until the ledger settles.

``slipway serve`` runs as a subprocess (dry run, the examples configuration, a fresh state folder,
loopback on a free port). K client threads send N signed pushes of the real sample (distinct
commits) over keep-alive connections; the clock stops for **accepted** when the last 202 has
arrived, and for **settled** when every request has a ledger record in a final state
(dispatched, superseded or failed). Pushes to one branch coalesce: all but the newest are
superseded, and the newest waits out the quiet period (3 s in the examples) before its dry run.

Floor, measured in the same run: one in-process loop doing the same work with the real parts
and no HTTP: verify each signature (HMAC-SHA256) and parse the push, append its BuildRequest to a
LocalQueue (the request as the receiver built it beforehand, outside the clock, re-stamped with
the time it arrives), then receive and dispatch every message with the real Dispatcher and the
DryRunBackend, settling each message as the queue trigger does, until the ledger is settled. The
quiet period is the same on both sides. Never a pass/fail.

    .venv/bin/python -m bench.burst [--pushes 1000] [--clients 4]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "github" / "push-branch-signed-aspnet.json"
CONFIG = ROOT / "examples" / "slipway.yaml"
SECRET = "bench-burst-secret"
SETTLED = ("dispatched", "superseded", "failed")
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/api/")


def _bodies(count: int) -> list[bytes]:
    """Distinct pushes (distinct commits) of the real sample's size and shape."""
    payload = json.loads(SAMPLE.read_bytes())
    bodies = []
    for i in range(count):
        payload["after"] = hashlib.sha1(f"burst-{i}".encode()).hexdigest()  # noqa: S324 - a fake commit id
        payload["head_commit"]["id"] = payload["after"]
        bodies.append(json.dumps(payload).encode())
    return bodies


def _signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _headers(body: bytes, delivery: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": _signature(body),
    }


def _settings(state_dir: Path) -> dict[str, str]:
    """The settings both sides run with: dry run (no ACR_* settings), no Git host tokens."""
    return {
        "SLIPWAY_CONFIG": str(CONFIG),
        "SLIPWAY_STATE_DIR": str(state_dir),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "BUILD_QUEUE": "build-requests",
        # The examples' cache signs with an account key: set, so the dry runs are dispatched
        # rather than recorded as runs that could not start.
        "SLIPWAY_CACHE_ACCOUNT_KEY": "YmVuY2gtb25seQ==",
    }


def _ledger_settled(state_dir: Path, expected: int) -> Counter[str] | None:
    """Records by status once every request has one in a final state (cheap until then)."""
    runs = state_dir / "ledger" / "runs"
    try:
        names = [e.name for e in os.scandir(runs) if e.name.endswith(".json") and not e.name.startswith(".")]
    except FileNotFoundError:
        return None
    if len(names) < expected:
        return None
    statuses: Counter[str] = Counter()
    for name in names:
        try:
            status = json.loads((runs / name).read_bytes()).get("status")
        except (FileNotFoundError, ValueError):
            return None
        if status not in SETTLED:
            return None
        statuses[status] += 1
    return statuses


@dataclass(frozen=True)
class Outcome:
    accepted: float  # seconds from the first push sent to the last one accepted
    settled: float  # seconds from the first push sent to the ledger settled
    statuses: Counter[str]


# --- slipway serve ----------------------------------------------------------------------------


def _start_serve(state_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACR_", "SLIPWAY_", "AzureWebJobs"))}
    env.update(_settings(state_dir))
    # An empty settings file, so that a local.settings.json in the checkout is not read.
    no_settings = state_dir / "no-local.settings.json"
    no_settings.write_text('{"IsEncrypted": false, "Values": {}}')
    command = [
        sys.executable,
        "-c",
        "import sys; from shared.app.cli import main; sys.exit(main())",
        "serve",
        "--port",
        "0",
        "--settings",
        str(no_settings),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return server, int(match.group(1))
        if server.poll() is not None:
            break
        time.sleep(0.05)
    server.kill()
    raise SystemExit(f"slipway serve did not start:\n{log.read_text(errors='replace')[-2000:]}")


def _client(port: int, work: Sequence[tuple[int, bytes]], statuses: list[int]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for number, body in work:
            connection.request(
                "POST", "/api/hooks/github", body=body, headers=_headers(body, f"burst-{number}")
            )
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()


def served(bodies: list[bytes], clients: int, timeout: float) -> Outcome:
    """Seconds until the last push was accepted, and until the ledger settled."""
    with tempfile.TemporaryDirectory(prefix="slipway-burst-") as folder:
        state_dir = Path(folder)
        server, port = _start_serve(state_dir, state_dir / "serve.log")
        try:
            shares = [list(enumerate(bodies))[i::clients] for i in range(clients)]
            statuses: list[int] = []
            threads = [threading.Thread(target=_client, args=(port, share, statuses)) for share in shares]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            accepted = time.perf_counter() - started
            refused = [s for s in statuses if s != 202]
            if len(statuses) != len(bodies) or refused:
                raise SystemExit(f"serve: {len(statuses)} answers, not 202: {refused[:10]}")
            deadline = time.monotonic() + timeout
            while (statuses_by := _ledger_settled(state_dir, len(bodies))) is None:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"serve: the ledger did not settle within {timeout:.0f} s")
                time.sleep(0.1)
            return Outcome(accepted, time.perf_counter() - started, statuses_by)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# --- floor ------------------------------------------------------------------------------------


def _requests(bodies: list[bytes], settings: Mapping[str, str]) -> list[bytes]:
    """The BuildRequest the real receiver makes of each push (outside the clock)."""
    import azure.functions as func

    from handlers import webhooks
    from shared.app.runtime import Runtime, set_runtime
    from shared.platform.queue.port import OutgoingMessage

    class Capture:
        def __init__(self) -> None:
            self.messages: list[OutgoingMessage] = []

        def send(self, messages: Sequence[OutgoingMessage]) -> None:
            self.messages.extend(messages)

    capture = Capture()
    set_runtime(Runtime(dict(settings), queue=capture))
    receive = webhooks.github_webhook.build().get_user_function()
    for number, body in enumerate(bodies):
        request = func.HttpRequest(
            "POST", "http://localhost/api/hooks/github", headers=_headers(body, f"floor-{number}"), body=body
        )
        response = receive(request)
        if response.status_code != 202:
            raise SystemExit(f"floor: the receiver answered {response.status_code}: {response.get_body()!r}")
    if len(capture.messages) != len(bodies):
        raise SystemExit(f"floor: {len(capture.messages)} requests for {len(bodies)} pushes")
    return [message.body for message in capture.messages]


def floor(bodies: list[bytes], timeout: float) -> Outcome:
    """The same pushes, verified, queued and dispatched in one loop with the real parts."""
    from shared.app.runtime import Runtime, set_runtime
    from shared.dispatch.dispatcher import Outcome as Dispatched
    from shared.intake.rebuild_queue import send_requests
    from shared.model.build_request import BuildRequest

    with tempfile.TemporaryDirectory(prefix="slipway-burst-floor-") as folder:
        state_dir = Path(folder)
        settings = _settings(state_dir)
        built = [BuildRequest.from_json(body) for body in _requests(bodies, settings)]
        base = Runtime(dict(settings))
        queue = base.local_queue()
        rt = Runtime(dict(settings), queue=queue)
        set_runtime(rt)
        dispatcher = rt.dispatcher()
        quiet = logging.getLogger("slipway.bench.burst")
        signatures = [_signature(body) for body in bodies]
        key = SECRET.encode()
        started = time.perf_counter()
        for body, signature, request in zip(bodies, signatures, built, strict=True):
            if not hmac.compare_digest("sha256=" + hmac.digest(key, body, "sha256").hex(), signature):
                raise SystemExit("floor: a signature does not verify")
            json.loads(body)
            trigger = request.trigger.model_copy(update={"received_at": datetime.now(UTC)})
            stamped = request.model_copy(update={"trigger": trigger})
            send_requests(
                queue, [stamped], correlation_id=trigger.correlation_id, subject="push", logger=quiet
            )
        accepted = time.perf_counter() - started
        deadline = time.monotonic() + timeout
        while True:
            messages = queue.receive(max_count=1)
            for message in messages:
                result = dispatcher.dispatch(
                    message.body, message_id=message.message_id, delivery_count=message.delivery_count or 1
                )
                if result.outcome in (Dispatched.RETRY, Dispatched.DEAD_LETTER):
                    queue.abandon(message)
                else:
                    queue.complete(message)
            if not messages:
                if (statuses_by := _ledger_settled(state_dir, len(bodies))) is not None:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"floor: the ledger did not settle within {timeout:.0f} s")
                queue.wait_for_message(0.5, poll_interval=0.01)
        settled = time.perf_counter() - started
        queue.close()
        return Outcome(accepted, settled, statuses_by)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=1000, help="signed pushes in the burst (default 1000)")
    parser.add_argument("--clients", type=int, default=4, help="client threads, keep-alive each (default 4)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up settling after this many s")
    args = parser.parse_args(argv)
    if args.pushes < 1 or args.clients < 1:
        parser.error("--pushes and --clients must be at least 1")
    logging.disable(logging.INFO)  # the floor's own log lines are not part of its work
    bodies = _bodies(args.pushes)
    base = floor(bodies, args.timeout)
    serve = served(bodies, args.clients, args.timeout)
    n = len(bodies)
    print(f"burst of {n} signed pushes, {args.clients} keep-alive clients, dry run, one branch")
    print(f"{'':6} {'accepted/s':>10} {'accepted s':>10} {'settled s':>9}  ledger")
    for name, run in (("serve", serve), ("floor", base)):
        ledger = ", ".join(f"{count} {status}" for status, count in sorted(run.statuses.items()))
        print(f"{name:6} {n / run.accepted:>10.0f} {run.accepted:>10.2f} {run.settled:>9.2f}  {ledger}")
    print(f"ratio serve / floor, time to settled: {serve.settled / base.settled:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
