"""Loading ``slipway.yaml``: YAML node tree → plain data → models, every problem at ``file:line``.

The loader keeps the YAML node tree so every problem is reported as
``file:line: field.path: message``, which an operator can act on without reading a pydantic
traceback. It also bounds what a hostile or broken file can cost: characters YAML does not allow
(a NUL byte), nesting deeper than ``MAX_DEPTH`` and alias expansion beyond ``MAX_NODES`` are
problems, not tracebacks.

Checks beyond the models (the renderer's verdict on each target) live in the app, which passes
them to ``parse_checked``: the model layer does not know the renderer.

PyYAML is imported inside the loader only: the Functions worker imports this package on every
cold start, and most invocations use an already loaded configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.model.config.problems import ConfigError, ConfigProblem, FieldPath, Position, format_path
from shared.model.config.slipway_config import SlipwayConfig
from shared.model.config.validation_messages import validation_messages

if TYPE_CHECKING:
    import yaml

CONFIG_SETTING = "SLIPWAY_CONFIG"
DEFAULT_CONFIG_FILE = "slipway.yaml"
# An alias-heavy document ("billion laughs") expands exponentially when walked or validated;
# no real configuration comes near this many nodes.
MAX_NODES = 100_000
# Far beyond any real configuration, far below the interpreter's recursion limit.
MAX_DEPTH = 64
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# A check of a valid configuration beyond its models: (field path, message) for each finding.
ConfigCheck = Callable[[SlipwayConfig], Iterable[tuple[FieldPath, str]]]


class _TooManyNodesError(Exception):
    pass


@dataclass(frozen=True)
class CheckedConfig:
    """A configuration every target of which renders, and the warnings about it."""

    config: SlipwayConfig
    warnings: tuple[ConfigProblem, ...] = ()


def config_path(settings: Mapping[str, str], app_root: Path) -> Path:
    """The configuration file the app uses: setting ``SLIPWAY_CONFIG``, relative to the app root.

    Relative paths are resolved against the app root, not the working directory, because the
    Functions host does not promise one.
    """
    value = (settings.get(CONFIG_SETTING) or "").strip() or DEFAULT_CONFIG_FILE
    path = Path(value)
    return path if path.is_absolute() else app_root / path


def load_config(path: str | Path) -> SlipwayConfig:
    """Read and validate a ``slipway.yaml``; raises ``ConfigError`` (also for a missing file)."""
    return parse_config(read_config_text(path), source=str(path))


def read_config_text(path: str | Path) -> str:
    """The text of a configuration file; raises ``ConfigError`` if unreadable or not UTF-8."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigProblem(source, None, "", f"cannot read the file: {reason}")]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(source, None, "", f"the file is not UTF-8 text: {exc}")]) from exc
    return text


def parse_config(text: str, *, source: str) -> SlipwayConfig:
    """Validate the YAML ``text`` of a configuration; ``source`` names it in problems."""
    return _parse_located(text, source=source)[0]


def parse_checked(text: str, *, source: str, refusals: ConfigCheck, warnings: ConfigCheck) -> CheckedConfig:
    """``parse_config``, then ``refusals`` and ``warnings`` located at the lines of their fields.

    Any refusal is a problem (raises ``ConfigError`` with all of them); warnings come back with the
    configuration.
    """
    config, positions = _parse_located(text, source=source)
    problems = [
        ConfigProblem(source, _line_of(path, positions), format_path(path), message)
        for path, message in refusals(config)
    ]
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)
        raise ConfigError(problems)
    found = tuple(
        ConfigProblem(source, _line_of(path, positions), format_path(path), message)
        for path, message in warnings(config)
    )
    return CheckedConfig(config, found)


def _parse_located(text: str, *, source: str) -> tuple[SlipwayConfig, Mapping[FieldPath, Position]]:
    """The configuration and the line of each of its values.

    The node tree is composed first (``yaml.safe_load`` would lose the line numbers and keep the
    last of two duplicate keys without a word); then plain data is constructed from it and
    validated by the models, and each pydantic error is mapped back to the line of its node.
    """
    import yaml

    try:
        loader = _depth_limited_loader()(text)  # the reader checks every character here
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_problem(source, text, exc)]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_yaml_problem(source, exc)]) from None
        if root is None:
            raise ConfigError(
                [ConfigProblem(source, 1, "", "the file is empty; at least 'registry' is required")]
            )
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(
                [
                    ConfigProblem(
                        source,
                        root.start_mark.line + 1,
                        "",
                        f"the top level must be a mapping of keys (version, registry, targets, ...), "
                        f"not {_node_kind(root)}",
                    )
                ]
            )
        tree = _TreeWalk(root.start_mark.line + 1)
        try:
            tree.walk(root)
        except _TooManyNodesError:
            raise ConfigError(
                [ConfigProblem(source, 1, "", f"the document expands to more than {MAX_NODES} nodes")]
            ) from None
        problems = [
            ConfigProblem(source, line, format_path(path), message) for path, line, message in tree.problems
        ]
        try:
            data = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            # Usually an unhashable key, which the walk has already reported more clearly.
            problem = _yaml_problem(source, exc)
            if problem.line not in {known.line for known in problems}:
                problems.append(problem)
            raise ConfigError(sorted(problems, key=lambda known: known.line or 0)) from None
    finally:
        loader.dispose()

    try:
        config = SlipwayConfig.model_validate(data)
    except ValidationError as exc:
        for path, message in validation_messages(exc, data, tree.positions, tree.odd_key_parents):
            problems.append(ConfigProblem(source, _line_of(path, tree.positions), format_path(path), message))
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)  # stable: same-line problems keep their order
        raise ConfigError(problems)
    return config, tree.positions


def _yaml_problem(source: str, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    if exc.context == "expected a single document in the stream":
        return ConfigProblem(
            source,
            None if mark is None else mark.line + 1,
            "",
            "a second YAML document ('---'); use only one",
        )
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        context_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        message = f"{exc.problem} ({exc.context}{context_line})"
    return ConfigProblem(source, None if mark is None else mark.line + 1, "", f"invalid YAML: {message}")


def _reader_problem(source: str, text: str, exc: yaml.reader.ReaderError) -> ConfigProblem:
    """A character YAML does not allow in a document (a NUL byte, most control characters)."""
    line = text.count("\n", 0, exc.position) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return ConfigProblem(source, line, "", f"character U+{code:04X} is not allowed in YAML text")


def _depth_limited_loader() -> type[yaml.SafeLoader]:
    """``SafeLoader`` that refuses collections nested deeper than ``MAX_DEPTH``, with the line.

    PyYAML composes nodes recursively, so a deep enough document would raise ``RecursionError``
    (a traceback, not a problem report); no configuration is nested anywhere near this deep.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            if self._depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return Loader


def _node_kind(node: yaml.Node) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the scalar {node.value!r}"


class _TreeWalk:
    """Records the line of every key and list item, and the YAML-level problems models cannot see.

    Duplicate keys and non-string keys vanish or change shape once the tree is turned into a
    dict, so they are found here, on the nodes. ``odd_key_parents`` are the mappings holding a
    non-string key: pydantic's own complaint about them would only repeat the walk's.
    """

    def __init__(self, root_line: int) -> None:
        self.positions: dict[FieldPath, Position] = {(): Position(root_line)}
        self.problems: list[tuple[FieldPath, int, str]] = []
        self.odd_key_parents: set[FieldPath] = set()
        self._active: set[int] = set()  # nodes on the current branch: an alias may name an ancestor
        self._count = 0  # bounds the walk against alias expansion

    def walk(self, node: yaml.Node, path: FieldPath = ()) -> None:
        import yaml

        self._count += 1
        if self._count > MAX_NODES:
            raise _TooManyNodesError
        if id(node) in self._active:
            return
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    self._record((*path, index), item.start_mark.line + 1, item)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> None:
        import yaml

        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else _node_kind(key_node)
                self.problems.append((path, line, f'key {shown!r} is not a string (quote it: "{shown}")'))
                self.odd_key_parents.add(path)
                continue
            key = key_node.value
            if key in seen:
                message = f"duplicate key (first at line {seen[key]}); YAML would keep only the last"
                self.problems.append(((*path, key), line, message))
            seen[key] = line
            # The last occurrence is the one in the data, so its lines win.
            self._record((*path, key), line, value_node)

    def _record(self, path: FieldPath, line: int, value: yaml.Node) -> None:
        import yaml

        text = value.value if isinstance(value, yaml.ScalarNode) else None
        self.positions[path] = Position(line, text)
        self.walk(value, path)


def _line_of(path: FieldPath, positions: Mapping[FieldPath, Position]) -> int | None:
    """The line of ``path``, else of its nearest recorded ancestor (a missing key: its mapping)."""
    for end in range(len(path), -1, -1):
        position = positions.get(path[:end])
        if position is not None:
            return position.line
    return None
