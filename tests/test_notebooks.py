"""The lecture's notebooks (notebooks/*.ipynb): generated, clean, valid Python, in the lecture's order.

Cheap checks only: nothing here executes a notebook (CI runs them all with
scripts/run_notebooks.py, in its own step). The lecture's order is read from
docs/notebooks.rst, which maps every cell of the lecture's notebooks, in the
lecture's order, to the convlens calls that replace it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
MAPPING = ROOT / "docs" / "notebooks.rst"

#: Each notebook and the part of docs/notebooks.rst it follows: from its section's title to the next
#: notebook's (7.3 takes the slides after it, HW4's table and AlphaGo, as docs/notebooks.rst has them).
SECTIONS = {
    "7.1_cnn.ipynb": ("7.1. CNN\n---", "7.2. What does CNN learn\n---"),
    "7.2_what_does_cnn_learn.ipynb": ("7.2. What does CNN learn\n---", "7.3 GradCAM and HW4\n---"),
    "7.3_gradcam.ipynb": ("7.3 GradCAM and HW4\n---", "Not in convlens\n---"),
}
#: A lecture cell's heading in a notebook: "## `In [12]`: ..." or "## `[13]`: ..." as the slides label it.
HEADING_LABEL = re.compile(r"^## `(?:In )?\[(\d+)\]`")
#: A lecture cell's row in docs/notebooks.rst: "   * - ``In [12]``: ..." or "   * - ``[13]``: ...".
ROW_LABEL = re.compile(r"^   \* - ``(?:In )?\[(\d+)\]``", flags=re.MULTILINE)
QUOTE = re.compile(r"^```python\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


def load_maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(name: str) -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    return notebook


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return "".join(text) if isinstance(text, list) else str(text)


def section(name: str) -> str:
    text = MAPPING.read_text(encoding="utf-8")
    start, end = SECTIONS[name]
    return text[text.index(start) : text.index(end)]


def test_the_notebooks_are_the_three() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SECTIONS)


def test_committed_notebooks_are_what_the_script_writes() -> None:
    pytest.importorskip("nbformat")
    rendered: dict[str, str] = load_maker().render()
    assert sorted(rendered) == sorted(SECTIONS)
    for name, text in rendered.items():
        committed = (NOTEBOOKS / name).read_text(encoding="utf-8")
        assert committed == text, f"notebooks/{name} is stale: run python scripts/make_notebooks.py"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_no_outputs_and_no_execution_counts(name: str) -> None:
    notebook = read(name)
    assert notebook["nbformat"] == 4
    for i, cell in enumerate(notebook["cells"]):
        assert "attachments" not in cell, f"{name} cell {i}"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{name} cell {i} has outputs"
            assert cell["execution_count"] is None, f"{name} cell {i} has an execution count"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_code_cell_compiles(name: str) -> None:
    inputtransformer2 = pytest.importorskip("IPython.core.inputtransformer2")
    transformer = inputtransformer2.TransformerManager()
    for i, cell in enumerate(read(name)["cells"]):
        if cell["cell_type"] == "code":
            # The kernel's own translation of `%matplotlib inline` and friends, then plain Python.
            python = transformer.transform_cell(source(cell))
            compile(python, f"notebooks/{name}, cell {i}", "exec")


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_no_pyplot(name: str) -> None:
    """convlens returns Figures; a notebook shows a cell's last value (no pyplot, no plt.show())."""
    for i, cell in enumerate(read(name)["cells"]):
        if cell["cell_type"] == "code":
            text = source(cell)
            assert "pyplot" not in text, f"{name} cell {i}"
            assert not re.search(r"\bplt\b", text), f"{name} cell {i}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_lecture_cells_in_the_lectures_order(name: str) -> None:
    """The lecture cells' labels, and the code each quotes, come as docs/notebooks.rst has them."""
    mapping = section(name)
    cells = read(name)["cells"]
    labels: list[int] = []
    position = 0
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        text = source(cell)
        match = HEADING_LABEL.match(text)
        if match:
            labels.append(int(match.group(1)))
            assert QUOTE.search(text), f"{name} cell {i} quotes no code of the lecture's cell"
            assert i + 1 < len(cells), f"{name}: no code cell after cell {i}"
            assert cells[i + 1]["cell_type"] == "code", f"{name}: no code cell after cell {i}"
        for quote in QUOTE.findall(text):
            for raw in quote.splitlines():
                line = raw.strip()
                if not line or line == "...":
                    continue
                found = mapping.find(line, position)
                assert found >= 0, f"{name} cell {i} quotes {line!r}, not there or not in this order"
                position = found + len(line)
    assert labels == [int(label) for label in ROW_LABEL.findall(mapping)]
    assert labels == sorted(labels)


def test_gradcam_then_hw4_then_alphago() -> None:
    """The slides' order after 'Run 7.3 GradCAM.ipynb': Grad-CAM, HW4's table, AlphaGo's network."""
    # Each part's heading in the notebook, and the start of its row in docs/notebooks.rst.
    parts = [
        ("## Grad-CAM of the predicted class", "   * - Grad-CAM of the predicted class"),
        ("## HW4:", "   * - HW4:"),
        ("## AlphaGo's policy network", "   * - The policy network:"),
    ]
    cells = read("7.3_gradcam.ipynb")["cells"]
    headings = [source(cell).splitlines()[0] for cell in cells if cell["cell_type"] == "markdown"]
    found = [next(i for i, h in enumerate(headings) if h.startswith(heading)) for heading, _ in parts]
    assert found == sorted(found)
    mapping = section("7.3_gradcam.ipynb")
    rows = [mapping.index(row) for _, row in parts]
    assert rows == sorted(rows)


def test_the_docs_list_every_notebook() -> None:
    page = (ROOT / "docs" / "lecture_notebooks.rst").read_text(encoding="utf-8")
    entries = re.findall(r"^   _notebooks/(\S+)$", page, flags=re.MULTILINE)
    assert entries == [Path(name).stem for name in sorted(SECTIONS)]
