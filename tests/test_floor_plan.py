"""The floor plan holds: packages by capability, imports only downward, small files, a README that
lists the tree as it is.

The layers, lowest first (README, "Repository layout"): ``model`` (values, no I/O), ``platform``
(adapters), then the domain packages ``acr``, ``runs``, ``intake``, ``dispatch``, ``pruning``, and
``app`` (composition, CLI) on top. A module may import its own layer or a lower one, at module level,
inside a function, or only for type checking: each is a dependency all the same.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
LAYERS = ("model", "platform", "acr", "runs", "intake", "dispatch", "pruning", "app")
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(SHARED.rglob("*.py"))


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every ``shared.*`` module ``path`` imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shared":
                found.extend((node.lineno, f"shared.{alias.name}") for alias in node.names)
            elif node.module.startswith("shared."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("shared."))
    return found


def test_shared_holds_only_the_layer_packages() -> None:
    top = {p.name for p in SHARED.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", *LAYERS}


def test_no_package_imports_a_higher_layer() -> None:
    upward = []
    for path in _modules():
        layer = path.relative_to(SHARED).parts[0]
        if layer not in LAYERS:
            continue
        for line, module in _imported(path):
            other = module.split(".")[1]
            assert other in LAYERS, f"{path.relative_to(ROOT)}:{line} imports {module}, outside the layers"
            if LAYERS.index(other) > LAYERS.index(layer):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {module}")
    assert upward == []


def _imported_at_import_time(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: not inside functions nor ``if TYPE_CHECKING``."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.If) and not (
                isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            ):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return names


def test_the_domain_is_importable_without_azure_functions() -> None:
    """Only the local host, which runs the function app, loads it, and only when it does."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules()
        if any(
            n == "azure.functions" or n.startswith("azure.functions.") for n in _imported_at_import_time(path)
        )
    ]
    assert offenders == []


def test_handlers_import_what_they_call() -> None:
    """One wiring style: a handler imports its domain module by name, never through importlib."""
    for path in sorted((ROOT / "handlers").glob("*.py")):
        text = path.read_text()
        assert "importlib" not in text and "import_module" not in text, path.name


def test_no_source_file_over_the_limit() -> None:
    sources = [*_modules(), *(ROOT / "handlers").glob("*.py"), ROOT / "function_app.py"]
    sources += sorted((ROOT / "bench").glob("*.py"))
    long = {
        str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = re.findall(r"```\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the layout section holds one tree"
    return blocks[0]


def test_the_readme_layout_names_every_package_and_module() -> None:
    """The README's tree is the tree: each package as ``name/`` and each module by its name."""
    block = _layout_section()
    words = set(re.findall(r"[A-Za-z0-9_]+/?", block))
    missing = []
    for path in _modules():
        rel = path.relative_to(SHARED)
        for package in rel.parts[:-1]:
            if f"{package}/" not in words:
                missing.append(f"{package}/")
        if path.name != "__init__.py" and path.stem not in words:
            missing.append(str(rel))
    for path in sorted((ROOT / "handlers").glob("*.py")):
        if path.name != "__init__.py" and path.stem not in words:
            missing.append(f"handlers/{path.name}")
    assert sorted(set(missing)) == []


def test_the_readme_layout_names_nothing_that_is_gone() -> None:
    block = _layout_section()
    stems = {p.stem for p in _modules()} | {p.parent.name for p in _modules()}
    stems |= {p.stem for p in (ROOT / "handlers").glob("*.py")}
    named = set(re.findall(r"\b([a-z][a-z0-9_]*)\.py\b", block))
    assert named - stems - {"function_app"} == set()
