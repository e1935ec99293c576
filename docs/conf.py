"""Sphinx configuration for convlens."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nbformat
from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

import convlens

project = "convlens"
author = "The convlens team"
release = convlens.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "myst_nb",  # renders the lecture's notebooks (docs/_notebooks/*.ipynb); needs no pandoc
]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shape"]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = False
html_theme = "furo"
html_title = f"convlens {release}"
html_static_path = ["_static"]
html_css_files = ["convlens.css"]
exclude_patterns = ["_build", "_tour", "auto_examples/*.ipynb", "**/.ipynb_checkpoints"]
# The notebooks are run by scripts/run_notebooks.py (CI runs it before this build), never here.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]  # the notebooks' $x^* = \arg\max_x a^k$
nb_render_markdown_format = "gfm"  # a cell's Markdown output (HW4's table) may be a table

#: Where ``convlens tour --out docs/_tour --quick`` writes the lecture tour. When the folder
#: exists, the build copies it to ``<html output>/tour/`` (see :func:`copy_tour`), and the tag
#: ``tour`` lets the pages link ``tour/index.html`` (``.. only:: tour``).
TOUR = Path(__file__).parent / "_tour"
if (TOUR / "index.html").is_file():
    tags.add("tour")  # noqa: F821 - Sphinx puts `tags` in this namespace


#: The lecture's notebooks, written by ``scripts/make_notebooks.py`` and committed without outputs,
#: and the folder the docs render them from (gitignored). ``scripts/run_notebooks.py`` writes the
#: executed copies there; myst-nb only renders them. See :func:`stage_notebooks` for a notebook
#: without an up-to-date executed copy.
NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
RENDERED = Path(__file__).parent / "_notebooks"
NOT_RUN = (
    "**Not run for these docs:** this page shows the notebook without its outputs, because the "
    "docs were built without running it (or after it changed). `python scripts/run_notebooks.py` "
    "writes the executed copies to `docs/_notebooks/`, and the next docs build shows them."
)


def _cells(nb: Any) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def stage_notebooks() -> list[str]:
    """Make sure ``docs/_notebooks/`` has a page for every notebook; return those not run.

    An executed copy is kept when every code cell ran and its cells are the committed
    notebook's. Otherwise (no copy, a copy from before the notebook changed) the committed
    notebook goes there instead, with a note that it was not run: the docs show every
    notebook either way, and never outputs of code other than the cells on the page. The folder
    is a build product, like ``auto_examples/``; a file is rewritten only when it changes.
    """
    RENDERED.mkdir(exist_ok=True)
    not_run = []
    for source in sorted(NOTEBOOKS.glob("*.ipynb")):
        committed = nbformat.read(source, as_version=4)
        target = RENDERED / source.name
        if target.is_file():
            copy = nbformat.read(target, as_version=4)
            ran = all(c.get("execution_count") is not None for c in copy.cells if c.cell_type == "code")
            if ran and _cells(copy) == _cells(committed):
                continue
        committed.cells.insert(1, nbformat.v4.new_markdown_cell(NOT_RUN, id="not-run"))
        text = nbformat.writes(committed) + "\n"
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        not_run.append(source.name)
    # Anything else there (a renamed notebook's old copy) is no page of these docs.
    known = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    exclude_patterns.extend(f"_notebooks/{p.name}" for p in RENDERED.glob("*.ipynb") if p.name not in known)
    return not_run


#: The tag ``notebooks`` says every notebook page shows its executed copy (``.. only:: notebooks``).
NOT_RUN_NOTEBOOKS = stage_notebooks()
if not NOT_RUN_NOTEBOOKS:
    tags.add("notebooks")  # noqa: F821 - Sphinx puts `tags` in this namespace


def figure_scraper(
    block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any], **kwargs: Any
) -> str:
    """Collect the matplotlib Figures an example made (convlens never uses pyplot, so the
    default scraper, which asks pyplot, would see none)."""
    paths = []
    for value in list(block_vars["example_globals"].values()):
        candidates = value.values() if isinstance(value, dict) else [value]
        for fig in candidates:
            if isinstance(fig, Figure) and not getattr(fig, "_convlens_scraped", False):
                path = next(block_vars["image_path_iterator"])
                fig.savefig(path, dpi=80)
                fig._convlens_scraped = True  # type: ignore[attr-defined]
                paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])


#: The examples in the lecture's order (the tour's sections: shapes, convolution, filters,
#: digits, learn, gradcam, alphago); any other example comes after them, by name.
LECTURE_ORDER = (
    "plot_conv_arithmetic.py",
    "plot_convolution_6x6.py",
    "plot_alexnet_filters_and_maps.py",
    "plot_filters_and_feature_maps.py",
    "plot_what_a_cnn_learns.py",
    "plot_gradcam.py",
    "plot_alphago.py",
)


def lecture_order(filename: str) -> tuple[int, str]:
    """Sort key of the gallery's examples: the lecture's order."""
    name = Path(filename).name
    return (LECTURE_ORDER.index(name) if name in LECTURE_ORDER else len(LECTURE_ORDER), name)


sphinx_gallery_conf = {
    "examples_dirs": str(Path(__file__).parent.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": lecture_order,
    "image_scrapers": (figure_scraper,),
    "download_all_examples": False,
    "abort_on_example_error": True,
    "reset_modules": (),
}
# The gallery's scraper is a function, which Sphinx cannot pickle into its environment cache.
suppress_warnings = ["config.cache"]


def copy_tour(app: Any, exception: Exception | None) -> None:
    """Copy the tour's page and figures to ``<outdir>/tour/`` after an HTML build.

    Not ``html_extra_path``: that copies to the output's root, where the tour's
    ``index.html`` would replace the docs' own.
    """
    if exception is None and app.builder.format == "html" and TOUR.is_dir():
        shutil.copytree(TOUR, Path(app.outdir) / "tour", dirs_exist_ok=True)


def reread_notebooks(app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    """Read the notebook pages on every build (a second or so): a copy there can change without
    getting newer (moved back, restored from a cache), which Sphinx would not notice."""
    return [f"_notebooks/{p.stem}" for p in NOTEBOOKS.glob("*.ipynb")]


def setup(app: Any) -> dict[str, Any]:
    app.connect("build-finished", copy_tour)
    app.connect("env-get-outdated", reread_notebooks)
    return {"parallel_read_safe": True}
