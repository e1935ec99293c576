"""The house, as docs/architecture.md draws it: wings, the import direction, small modules.

Reads the source with :mod:`ast` (nothing is imported to find the imports), so an import inside a
function counts as much as one at the top. ``TYPE_CHECKING`` imports count too: a type that would
need an upward import is a sign the code sits in the wrong wing.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "convlens"

#: Each wing's rank: a module imports only from its own wing or from a wing of lower rank, and the
#: two wings of rank 3 (attribution, featureviz) do not import each other.
RANKS = {
    "errors": 0,
    "core": 1,
    "models": 2,
    "attribution": 3,
    "featureviz": 3,
    "render": 4,
    "apps": 5,
    # The top of the package: __init__ and the re-exports of the public API (convlens.tap, ...).
    "top": 6,
}

#: The public modules that re-export a wing's module under the name they had before the wings.
REEXPORTS = {
    "convlens.tap": "convlens.core.tap",
    "convlens.shapes": "convlens.core.shapes",
    "convlens.objectives": "convlens.featureviz.objectives",
    "convlens.images": "convlens.models.images",
    "convlens.zoo": "convlens.models.zoo",
}

#: About 400 lines of code at most per module (blank lines, comments and docstrings not counted).
MAX_LINES_OF_CODE = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def wing(module: str) -> str:
    if module == "convlens" or module in REEXPORTS:
        return "top"
    return module.split(".")[1]


def type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks: imports that never run."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                inside.update(ast.walk(statement))
    return inside


def imported(module: str, *, at_run_time: bool = False) -> set[str]:
    """The convlens modules ``module`` imports (``from convlens.core import display`` names the module).

    With ``at_run_time``, imports under ``if TYPE_CHECKING:`` are left out (they never execute).
    """
    tree = ast.parse(MODULES[module].read_text())
    skipped = type_checking_only(tree) if at_run_time else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "convlens")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "convlens":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    found.discard(module)
    return found


GRAPH = {module: imported(module) for module in MODULES}
RUN_TIME_GRAPH = {module: imported(module, at_run_time=True) for module in MODULES}


def test_every_module_sits_in_a_wing() -> None:
    assert {wing(m) for m in MODULES} <= RANKS.keys()
    for folder in ("core", "attribution", "featureviz", "models", "apps"):
        init = PACKAGE / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), (
            f"{folder}/__init__.py says what the wing holds"
        )


def test_nothing_imports_upward_and_siblings_stay_apart() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = wing(module), wing(target)
            if a != b and (RANKS[b] > RANKS[a] or RANKS[b] == RANKS[a]):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the direction of docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycle() -> None:
    # Imports for type annotations only (under TYPE_CHECKING) may point back: they never run.
    try:
        tuple(graphlib.TopologicalSorter(RUN_TIME_GRAPH).static_order())
    except graphlib.CycleError as err:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_no_module_imports_another_ones_private_names() -> None:
    reaches = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("convlens"):
                reaches += [
                    f"{module}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__all__"
                ]
    assert not reaches, "\n".join(reaches)


def lines_of_code(path: Path) -> int:
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def test_lines_of_code_counts_code_only(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Doc.\n\nMore doc.\n"""\n\n# a comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return x\n'
    )
    assert lines_of_code(sample) == 3


def test_modules_stay_small() -> None:
    large = {m: n for m, p in MODULES.items() if (n := lines_of_code(p)) > MAX_LINES_OF_CODE}
    assert not large, f"modules over {MAX_LINES_OF_CODE} lines of code: {large}"


@pytest.mark.parametrize(("public", "home"), sorted(REEXPORTS.items()))
def test_public_modules_reexport_their_wing_module(public: str, home: str) -> None:
    shown, source = importlib.import_module(public), importlib.import_module(home)
    assert list(shown.__all__) == list(source.__all__)
    for name in source.__all__:
        assert getattr(shown, name) is getattr(source, name), f"{public}.{name}"


def test_architecture_page_names_every_wing_and_module() -> None:
    page = (PACKAGE.parent.parent / "docs" / "architecture.md").read_text()
    missing = [m for m in MODULES if "." in m and f"`{m.split('.', 1)[1].replace('.', '/')}" not in page]
    assert not missing, f"docs/architecture.md does not name {missing}"
