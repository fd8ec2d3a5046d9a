"""``slipway prune images``: delete old registry images by the ``images:`` rules, never breaking one.

Registered by ``shared.app.commands.prune``. Exit 0 when every planned deletion happened (or with
``--dry-run``, which changes nothing), 1 when a registry call failed or the input is unusable.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from shared.app.cli import EXIT_FAILURE, EXIT_OK, CliError, Subparsers, load_command_config
from shared.app.commands.output import print_json, stderr_progress

if TYPE_CHECKING:
    from shared.pruning.retention.prune import PruneReport


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "images",
        help="delete registry images the images: rules no longer keep",
        description="Prune registry repositories by the images: rules of slipway.yaml. An index and "
        "everything it references (platform manifests, attestations, signatures) is one unit: nothing "
        "kept ever loses a manifest it references. Lists every manifest to delete with the rule that "
        "selected it, and every manifest kept only because something references it.",
    )
    parser.add_argument(
        "--registry", help="registry to prune, host or https://host (default: registry: in the config)"
    )
    parser.add_argument(
        "--api",
        choices=("acr", "oci"),
        help="acr: Azure SDK with Entra ID (default for ACR login servers, every cloud); oci: the /v2/ API",
    )
    parser.add_argument("--repository", metavar="PATTERN", help="only repositories matching this glob")
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    parser.add_argument("--json", action="store_true", help="stable JSON for scripts")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.platform.errors import is_service_error, one_line
    from shared.pruning.retention.prune import backend_from_settings, prune_images

    path, config = load_command_config(args.config)
    registry = args.registry or config.registry
    if not config.images:
        message = f"{path}: no images: rules; nothing to prune"
        if args.json:
            print_json({"registry": registry, "dry_run": args.dry_run, "ok": True, "repositories": []})
        else:
            print(message)
        return EXIT_OK
    try:
        backend = backend_from_settings(os.environ, registry, args.api)
        report = _run_with_progress(
            lambda progress: prune_images(
                backend, config.images, dry_run=args.dry_run, repository=args.repository, progress=progress
            ),
            quiet=args.json,
        )
    except Exception as exc:
        if isinstance(exc, ValueError) or is_service_error(exc):
            raise CliError(f"{registry}: {one_line(exc)}") from exc
        raise
    if args.json:
        print_json(report.to_json())
    else:
        _print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _run_with_progress(work: Any, *, quiet: bool) -> PruneReport:
    """Show which repository is being read (on stderr), unless the output is JSON."""
    if quiet:
        report: PruneReport = work(None)
        return report
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stderr_progress(*columns) as bar:
        task = bar.add_task("listing repositories", total=None)

        def advance(name: str, position: int, total: int) -> None:
            bar.update(task, description=name, completed=position - 1, total=total)

        report = work(advance)
    return report


def _print_report(report: PruneReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    data = report.to_json()
    for repository in data["repositories"]:
        rows = [m for m in repository["manifests"] if m["action"] != "keep"]
        table = Table(
            title=f"{repository['repository']} ({repository['rule']})", title_justify="left", show_lines=False
        )
        for column in ("digest", "kind", "tags", "action", "status", "reason"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                row["digest"][:19],
                row["kind"],
                " ".join(row["tags"]),
                row["action"],
                row["status"],
                row["reason"] + (f" ({row['note']})" if row["note"] else ""),
            )
        for tag in repository["tags"]:
            if tag["action"] == "untag":
                table.add_row(
                    tag["digest"][:19],
                    "tag",
                    tag["tag"],
                    "untag",
                    "",
                    tag["reason"] + f" {tag['note'] or ''}",
                )
        if rows or repository["errors"]:
            console.print(table)
        for error in repository["errors"]:
            console.print(f"[red]error[/]: {error}")
    summary = data["summary"]
    verb = "would delete" if report.dry_run else "deleted"
    count = summary["delete"] if report.dry_run else summary["deleted"]
    console.print(
        f"{report.registry}: {summary['repositories']} repositories, {verb} {count} manifests, "
        f"kept {summary['keep']} (+{summary['keep-referenced']} referenced)"
        + (f", [red]{summary['errors']} errors[/]" if summary["errors"] else "")
    )
