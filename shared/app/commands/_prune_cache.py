"""``slipway prune cache``: garbage-collect the BuildKit azblob cache (``--dry-run`` changes nothing)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from shared.app.cli import EXIT_OK, CliError, Subparsers, load_command_config

if TYPE_CHECKING:
    from datetime import timedelta

    from rich.progress import Progress as RichProgress

    from shared.platform.state import StateStore
    from shared.pruning.cache_gc.report import CacheReport

SUMMARY_FIELDS = (
    "manifests_kept",
    "manifests_expired",
    "blobs_listed",
    "blobs_live",
    "blobs_deleted",
    "blobs_kept_grace",
    "bytes_freed",
    "delete_failures",
)


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "cache",
        help="delete cache blobs no manifest needs, after expiring old cache names",
        description="Expire BuildKit cache manifests (max_age, max_bytes, closed pull requests; never "
        "keep_names), then delete every blob no remaining manifest references and older than the grace "
        "period. Reads the cache: "
        "section of slipway.yaml. Storage: SLIPWAY_CACHE_CONNECTION_STRING if set, else account_url with "
        "the app's identity: SLIPWAY_CACHE_CONNECTION_STRING__clientId, else AZURE_CLIENT_ID, else "
        "DefaultAzureCredential's own (Storage Blob Data Contributor on the container).",
    )
    parser.add_argument("--grace", type=_duration, metavar="D", help="override cache.grace (e.g. 24h)")
    parser.add_argument("--max-age", type=_duration, metavar="D", help="override cache.max_age (e.g. 14d)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as stable JSON")
    parser.set_defaults(handler=run)


def _duration(text: str) -> timedelta:
    from shared.model.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pull_request_state() -> StateStore | None:
    """Where the closes of pull requests are recorded (their caches expire), if there is one."""
    from shared.app.runtime import StateFolderMissing, runtime

    try:
        return runtime().state()
    except StateFolderMissing:
        return None


# Someone is waiting at a terminal: retry a blip, but not with the SDK's backoff (15 s, then
# growing: over a minute before a dead endpoint is reported). A few seconds here.
_CLI_RETRY: dict[str, Any] = {"retry_total": 2, "initial_backoff": 1, "increment_base": 2}


def run(args: argparse.Namespace) -> int:
    from shared.model.durations import format_duration
    from shared.platform.errors import is_service_error, one_line
    from shared.pruning.cache_gc.prune import collector_for, policy_for

    path, config = load_command_config(args.config)
    if config.cache is None:
        raise CliError(f"{path}: no cache: section, so there is no cache to prune")
    overrides: dict[str, Any] = {"grace": args.grace}
    if args.max_age is not None:
        overrides["max_age"] = args.max_age
    policy = policy_for(config.cache, state=_pull_request_state(), **overrides)
    if policy.grace.total_seconds() < config.run.timeout:
        print(
            f"warning: grace {format_duration(policy.grace)} is shorter than run.timeout "
            f"({config.run.timeout}s): blobs of a build exporting now may be deleted",
            file=sys.stderr,
        )
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from shared.app.commands.output import stderr_progress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}{task.fields[of]}"),
        TimeElapsedColumn(),
    )
    with stderr_progress(*columns) as rich_bar:
        bar = _ProgressBar(rich_bar)
        try:
            report = collector_for(
                config.cache, os.environ, policy=policy, dry_run=args.dry_run, progress=bar, **_CLI_RETRY
            ).collect()
        except Exception as exc:
            if isinstance(exc, ValueError) or is_service_error(exc):
                raise CliError(one_line(exc)) from None
            raise
    if args.json:
        from shared.app.commands.output import print_json

        print_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if report.error:
        raise CliError(report.error)
    return EXIT_OK


def _print_report(report: CacheReport) -> None:
    from shared.app.commands.output import print_table

    rows = [
        {
            "name": n.name,
            "size": _bytes(n.size_bytes),
            "blobs": n.blobs,
            "last_export": n.last_export.isoformat(timespec="seconds"),
            "status": "expired" if n.expired else "kept",
            "reason": n.reason,
        }
        for n in report.names
    ]
    print_table(
        f"cache names in {report.container}/{report.prefix}".rstrip("/"),
        ["name", "size", "blobs", "last_export", "status", "reason"],
        rows,
    )
    summary: list[dict[str, Any]] = [
        {"what": "grace", "count": report.grace},
        {"what": "max_age", "count": report.max_age or "none"},
        {"what": "seconds", "count": f"{report.duration_seconds:.1f}"},
    ]
    summary += [
        {"what": f, "count": _bytes(getattr(report, f)) if f.startswith("bytes") else getattr(report, f)}
        for f in SUMMARY_FIELDS
    ]
    print_table("dry run: nothing deleted" if report.dry_run else "summary", ["what", "count"], summary)


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


class _ProgressBar:
    """The collector's ``Progress`` (two counters) on ``stderr_progress``."""

    def __init__(self, bar: RichProgress) -> None:
        self._bar = bar
        self._manifests = bar.add_task("manifests read", total=None, of="")
        self._blobs = bar.add_task("blobs listed", total=None, of="")

    def manifests(self, read: int, total: int) -> None:
        self._bar.update(self._manifests, completed=read, total=total, of=f" of {total:,}")

    def blobs(self, listed: int, deleted: int) -> None:
        self._bar.update(self._blobs, completed=listed, of=f" ({deleted:,} deleted)")
