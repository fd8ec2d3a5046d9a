"""The ledger's settings: which store, how long records are kept, where expired ones go."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from shared.platform.app_settings import setting
from shared.platform.ledger.blob import BlobLedger
from shared.platform.ledger.folder import FolderLedger
from shared.platform.ledger.protocol import Ledger
from shared.platform.storage import storage_configured

RETENTION_SETTING = "SLIPWAY_LEDGER_RETENTION"
EXPORT_SETTING = "SLIPWAY_LEDGER_EXPORT_DIR"
# Budgets and orphan recovery look back 14 days (``budgets.LOOKBACK``, ``run_recovery``): a
# retention at least this long never removes a record either of them could read.
MIN_RETENTION = timedelta(days=15)


def retention_from_settings(settings: Mapping[str, str]) -> timedelta | None:
    """``SLIPWAY_LEDGER_RETENTION`` (``30d``, ``6w``...): how long records are kept unwritten.
    Unset: forever. Shorter than ``MIN_RETENTION``: a ValueError saying so."""
    from shared.model.durations import parse_duration

    text = setting(settings, RETENTION_SETTING)
    if text is None:
        return None
    try:
        retention = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{RETENTION_SETTING}: {exc}") from None
    if retention < MIN_RETENTION:
        raise ValueError(
            f"{RETENTION_SETTING}={text} is shorter than {MIN_RETENTION.days} days: "
            "budgets and orphan recovery read records 14 days back"
        )
    return retention


def export_from_settings(settings: Mapping[str, str]) -> Path | None:
    """``SLIPWAY_LEDGER_EXPORT_DIR``: where expired records are copied before deletion."""
    text = setting(settings, EXPORT_SETTING)
    return Path(text) if text else None


def ledger_from_settings(settings: Mapping[str, str], *, state_dir: Path) -> Ledger:
    """Blob when the host storage is configured (Azure, or Azurite locally), else a local folder."""
    if storage_configured(settings):
        return BlobLedger.from_settings(settings)
    return FolderLedger(Path(state_dir) / "ledger")
