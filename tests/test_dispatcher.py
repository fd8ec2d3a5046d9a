"""Dispatcher rules that need a controlled clock: claims held by live or dead attempts."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.acr.run_backend import DryRunBackend
from shared.dispatch.claims import CLAIM_LEASE
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.model.config import load_config
from shared.platform.ledger import FolderLedger, RunStatus

ROOT = Path(__file__).resolve().parents[1]
REQUEST = (ROOT / "examples" / "build-request.json").read_bytes()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class CrashingBackend(DryRunBackend):
    """Dies after the claim, before any run (a process killed mid-invocation)."""

    def start(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise SystemExit("worker killed")


def _dispatcher(tmp_path: Path, clock: Clock, backend: DryRunBackend | None = None) -> Dispatcher:
    config = load_config(ROOT / "examples" / "slipway.yaml")
    return Dispatcher(
        config=lambda: config,
        ledger=FolderLedger(tmp_path / "ledger"),
        backend=backend or DryRunBackend(),
        settings={},
        clock=clock,
    )


def test_a_claim_held_by_a_live_attempt_is_retried_not_completed(tmp_path: Path) -> None:
    clock = Clock()
    with contextlib.suppress(SystemExit):
        _dispatcher(tmp_path, clock, CrashingBackend()).dispatch(REQUEST)
    result = _dispatcher(tmp_path, clock).dispatch(REQUEST)
    assert result.outcome is Outcome.RETRY


def test_a_claim_left_by_a_dead_attempt_is_dead_lettered_with_what_to_check(tmp_path: Path) -> None:
    clock = Clock()
    with contextlib.suppress(SystemExit):
        _dispatcher(tmp_path, clock, CrashingBackend()).dispatch(REQUEST)
    clock.now += CLAIM_LEASE + timedelta(seconds=1)
    result = _dispatcher(tmp_path, clock).dispatch(REQUEST)
    assert result.outcome is Outcome.DEAD_LETTER
    assert result.reason == "DispatchInterrupted"
    assert "check the registry's runs" in (result.description or "")
    record, _ = FolderLedger(tmp_path / "ledger").get(result.request_id or "") or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHING and record.run_id is None


def test_duplicate_after_dispatch(tmp_path: Path) -> None:
    clock = Clock()
    first = _dispatcher(tmp_path, clock).dispatch(REQUEST)
    again = _dispatcher(tmp_path, clock).dispatch(REQUEST)
    assert (first.outcome, again.outcome) == (Outcome.DISPATCHED, Outcome.DUPLICATE)


def test_same_id_for_a_different_build_is_refused(tmp_path: Path) -> None:
    import json

    clock = Clock()
    assert _dispatcher(tmp_path, clock).dispatch(REQUEST).outcome is Outcome.DISPATCHED
    other = json.loads(REQUEST)
    other["platforms"] = ["linux/amd64"]  # allowed by the target, but another build
    result = _dispatcher(tmp_path, clock).dispatch(json.dumps(other))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTER, "IdConflict")


def test_unknown_target_and_invalid_body(tmp_path: Path) -> None:
    import json

    clock = Clock()
    body = json.loads(REQUEST)
    body["target"] = "nobody"
    result = _dispatcher(tmp_path, clock).dispatch(json.dumps(body))
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTER, "UnknownTarget")
    result = _dispatcher(tmp_path, clock).dispatch(b"not json")
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTER, "InvalidBuildRequest")


def test_missing_secret_for_a_real_backend(tmp_path: Path) -> None:
    class RealishBackend(DryRunBackend):
        name = "acr"

    example = load_config(ROOT / "examples" / "slipway.yaml")
    assert example.cache is not None  # Azurite's account (its key is public) would need no setting
    real_account = example.cache.model_copy(
        update={"account_url": "https://slipwaycache.blob.core.windows.net"}
    )
    config = example.model_copy(update={"cache": real_account})
    dispatcher = Dispatcher(
        config=lambda: config, ledger=FolderLedger(tmp_path / "ledger"), backend=RealishBackend(), settings={}
    )
    result = dispatcher.dispatch(REQUEST)
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTER, "MissingSetting")
    assert "SLIPWAY_CACHE_ACCOUNT_KEY" in (result.description or "")
