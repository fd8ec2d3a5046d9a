"""``slipway doctor``: check the configuration, the settings and every dependency, say what to fix.

Reads the same settings as the other commands (the environment, plus ``--settings`` values the
environment does not already set), so it checks a deployed environment from the app's own
settings or a laptop's local defaults. Exit code 1 when any check failed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the configuration, settings and dependencies; say what to fix",
        description="Check slipway.yaml, the settings the mode needs (local or Azure), and that the "
        "queue, the ledger, state and cache containers and the registry answer with the rights "
        "Slipway needs. Creates nothing that outlives it. Exit 1 when any check fails.",
    )
    parser.add_argument("--json", action="store_true", help="stable JSON for scripts")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.app.doctor import Doctor, report_rows

    # --settings (a global option) has put its Values into the environment already.
    # The CLI runs in a checkout or a deployment folder: its working directory is the app root.
    report = Doctor(dict(os.environ), app_root=Path(".")).run()
    rows = report_rows(report)
    if args.json:
        print_json({"ok": report.ok, "mode": report.mode, "checks": rows})
    else:
        failed = sum(1 for row in rows if row["status"] == "fail")
        verdict = "all checks passed" if report.ok else f"{failed} check(s) failed"
        title = f"slipway doctor ({report.mode} mode): {verdict}"
        print_table(title, ["name", "status", "detail", "fix"], rows)
    return 0 if report.ok else 1
