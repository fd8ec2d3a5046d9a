"""The ``slipway`` command.

Subcommands are plugged in, not listed here: every module in ``shared.app.commands`` that defines
``register(subparsers)`` adds its own parser and sets ``handler`` (``args -> exit code``) with
``parser.set_defaults(handler=...)``. ``config`` lives in this module because it is the one
command every installation needs.

Importing this module must stay cheap (it is imported for ``--help``): argparse only. ``rich``,
pydantic models and YAML are imported inside the command functions.

Every command takes the global options ``--config``, ``--state-dir`` and ``--settings`` (the
meaning ``slipway serve`` gives them): ``build_parser`` adds them to each leaf command after the
plug-ins registered, so a plug-in never declares them, and ``main`` applies them to the process
environment before the handler runs (and puts it back afterwards, for in-process callers); the
options themselves live in ``shared.app.cli_options``.

Exit codes: 0 success, 1 failure (an invalid configuration, an I/O error), 2 usage errors.
Errors go to stderr as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, cast

from shared.app.cli_options import (
    GlobalOptionError,
    add_global_options,
    apply_global_options,
    install_runtime,
    leaf_parsers,
)

if TYPE_CHECKING:
    from rich.console import Console

    from shared.model.config import ConfigProblem, SlipwayConfig

# argparse's class is generic only to type checkers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
COMMANDS_PACKAGE = "shared.app.commands"
PROG = "slipway"


class CliError(Exception):
    """A failure a command reports as one line on stderr and exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"{PROG} {version()}")
        parser.exit(EXIT_OK)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("slipway")
    except PackageNotFoundError:
        return "0+unknown"


def _help_handler(parser: argparse.ArgumentParser) -> Handler:
    """For a command group run without a subcommand: show its help, and exit as a usage error."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return show


def add_group(subparsers: Subparsers, name: str, **kwargs: Any) -> tuple[argparse.ArgumentParser, Subparsers]:
    """A command with subcommands of its own (``slipway config ...``) for plug-in modules to reuse."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(handler=_help_handler(parser))
    children = parser.add_subparsers(title="commands", metavar="COMMAND")
    return parser, children


def _command_modules() -> list[str]:
    package = importlib.import_module(COMMANDS_PACKAGE)
    return sorted(
        f"{COMMANDS_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


def build_parser() -> argparse.ArgumentParser:
    """The full parser: ``config`` from here, then every plug-in module of ``shared.app.commands``."""
    parser = _Parser(
        prog=PROG,
        description="Slipway: Git pushes to Azure Container Registry builds.",
        epilog="Run 'slipway COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.set_defaults(handler=_help_handler(parser))
    # Plug-ins are typed against plain ArgumentParser (the subparsers are _Parser at run time).
    subparsers = cast("Subparsers", parser.add_subparsers(title="commands", metavar="COMMAND"))
    register_config(subparsers)
    for module_name in _command_modules():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            # One broken plug-in must not take `slipway config validate` down with it.
            print(f"{PROG}: warning: command module {module_name} cannot be loaded: {exc}", file=sys.stderr)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(subparsers)
    for leaf in leaf_parsers(parser):
        add_global_options(leaf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``--help`` and usage errors included, for in-process use).

    The settings the global options apply, and the process-wide runtime the command builds, last
    as long as the command: an in-process caller (the tests) finds its environment as it was."""
    parser = build_parser()
    saved = dict(os.environ)
    installed = False
    try:
        args = parser.parse_args(argv)
        handler: Handler = args.handler
        apply_global_options(args)
        installed = install_runtime(creates_state=bool(getattr(args, "creates_state", False)))
        return handler(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_FAILURE)
    except (CliError, GlobalOptionError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``slipway runs list --json | head``): not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except Exception as exc:
        # Failures every command can meet, reported the same way wherever they surface.
        from shared.app.runtime import StateFolderMissing
        from shared.model.config import ConfigError

        if isinstance(exc, ConfigError):
            last = exc.problems[-1] if exc.problems else None
            if len(exc.problems) == 1 and last is not None and last.line is None:  # the file itself
                hint = "pass --config FILE or set SLIPWAY_CONFIG"
                print(f"{PROG}: error: {last.file}: {last.message} ({hint})", file=sys.stderr)
            else:
                _print_problems(exc.problems, exc.problems[0].file if exc.problems else "configuration")
            return EXIT_FAILURE
        if isinstance(exc, StateFolderMissing):
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    finally:
        if installed:
            from shared.app.runtime import set_runtime

            set_runtime(None)
        if os.environ != saved:
            os.environ.clear()
            os.environ.update(saved)


# --- slipway config ---------------------------------------------------------------------------


def register_config(subparsers: Subparsers) -> None:
    """``slipway config validate|schema``."""
    _parser, commands = add_group(
        subparsers,
        "config",
        help="check slipway.yaml, print its JSON Schema",
        description="Work with the configuration file, slipway.yaml.",
    )
    validate = commands.add_parser(
        "validate",
        help="check a configuration file",
        description="Check a slipway.yaml: its fields, then a build of each target rendered exactly as the "
        "dispatcher renders it. Prints 'OK: N targets' (and any warnings), or every problem as "
        "file:line: field: message and exits 1.",
    )
    validate.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="the file to check (default: the setting SLIPWAY_CONFIG, else slipway.yaml; relative to the "
        "current directory)",
    )
    validate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    validate.set_defaults(handler=run_config_validate)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of slipway.yaml, or regenerate schemas/",
        description="Print the JSON Schema (draft 2020-12) of slipway.yaml. With --write, write both "
        "generated schema files (slipway.yaml and BuildRequest v1) into a directory.",
    )
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument(
        "--write",
        nargs="?",
        const=_default_schema_dir(),
        type=Path,
        metavar="DIR",
        help="write the schema files into DIR (default: the project's schemas/ directory)",
    )
    mode.add_argument(
        "--check",
        nargs="?",
        const=_default_schema_dir(),
        type=Path,
        metavar="DIR",
        help="exit 1 if the schema files in DIR differ from what the models generate",
    )
    schema.set_defaults(handler=run_config_schema)


def _default_schema_dir() -> Path:
    # The committed schemas sit next to the `shared` package in a checkout; an installed copy
    # has no such directory, so fall back to ./schemas.
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    return checkout if checkout.is_dir() else Path("schemas")


def load_command_config(file: Path | None) -> tuple[Path, SlipwayConfig]:
    """The configuration a command works on: ``--config``, else the setting SLIPWAY_CONFIG, else
    slipway.yaml; a file that does not load is one ``CliError`` line (problems joined by "; ")."""
    from shared.model.config import ConfigError, config_path, load_config

    path = file if file is not None else config_path(os.environ, Path("."))
    try:
        return path, load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc).replace("\n", "; ")) from None


def _config_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    from shared.model.config import config_path

    # The CLI runs in a checkout or a deployment folder: its working directory plays the app root
    # (Path(".") keeps a relative setting relative, so problems read "slipway.yaml:12: ...").
    return config_path(os.environ, Path("."))


def _stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def run_config_validate(args: argparse.Namespace) -> int:
    from shared.app.config_check import check_config_file
    from shared.model.config import ConfigError

    path = _config_file(args)
    try:
        # The models, then a build of each target rendered as the dispatcher would render it.
        checked = check_config_file(path)
    except ConfigError as exc:
        if args.json:
            _print_json(
                {"ok": False, "file": str(path), "problems": [_problem_json(p) for p in exc.problems]}
            )
        else:
            _print_problems(exc.problems, str(path))
        return EXIT_FAILURE
    config = checked.config
    if args.json:
        _print_json(
            {
                "ok": True,
                "file": str(path),
                "targets": [t.name for t in config.targets],
                "problems": [],
                "warnings": [_problem_json(w) for w in checked.warnings],
            }
        )
    else:
        _print_summary(config, str(path))
        _print_warnings(checked.warnings)
    return EXIT_OK


def _print_warnings(warnings: Sequence[ConfigProblem]) -> None:
    from rich.text import Text

    console = _stderr()
    for warning in warnings:
        console.print(Text.assemble(("warning", "bold yellow"), f": {warning}"))


def _problem_json(problem: ConfigProblem) -> dict[str, object]:
    return {"file": problem.file, "line": problem.line, "path": problem.path, "message": problem.message}


def _print_json(value: object) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _print_problems(problems: Sequence[ConfigProblem], source: str) -> None:
    from rich.text import Text

    console = _stderr()
    for problem in problems:
        where = problem.file if problem.line is None else f"{problem.file}:{problem.line}"
        line = Text.assemble((where, "bold"), ": ")
        if problem.path:
            line.append(problem.path, style="cyan")
            line.append(": ")
        line.append(problem.message, style="red")
        console.print(line)
    if len(problems) > 1:
        console.print(Text(f"{source}: {len(problems)} problems", style="bold red"))


def _print_summary(config: SlipwayConfig, source: str) -> None:
    from rich import box
    from rich.table import Table

    console = _stdout()
    count = len(config.targets)
    console.print(f"[bold green]OK[/]: {count} target{'s' if count != 1 else ''}", markup=True)
    if not config.targets:
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("target", no_wrap=True)
    table.add_column("image", no_wrap=True)
    table.add_column("branches", overflow="fold")
    table.add_column("tags", overflow="fold")
    table.add_column("platforms", overflow="fold")
    for target in config.targets:
        table.add_row(
            target.name,
            target.image,
            " ".join(target.branches) or "-",
            " ".join(target.tags) or "-",
            " ".join(target.platforms),
        )
    console.print(table, soft_wrap=False)


def run_config_schema(args: argparse.Namespace) -> int:
    from shared.model.schemas import CONFIG_SCHEMA_FILE, GENERATORS, schema_text, stale_schemas, write_schemas

    if args.write is not None:
        try:
            written = write_schemas(Path(args.write))
        except OSError as exc:
            raise CliError(f"cannot write schemas into {args.write}: {exc.strerror or exc}") from exc
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        return EXIT_OK
    if args.check is not None:
        stale = stale_schemas(Path(args.check))
        if stale:
            raise CliError(
                f"out of date in {args.check}: {', '.join(stale)} (run 'slipway config schema --write')"
            )
        print(f"schemas in {args.check} are up to date", file=sys.stderr)
        return EXIT_OK
    sys.stdout.write(schema_text(GENERATORS[CONFIG_SCHEMA_FILE]()))
    return EXIT_OK
