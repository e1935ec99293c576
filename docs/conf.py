"""Sphinx configuration for convlens."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
exclude_patterns = ["_build", "_tour"]

#: Where ``convlens tour --out docs/_tour --quick`` writes the lecture tour. When the folder
#: exists, the build copies it to ``<html output>/tour/`` (see :func:`copy_tour`), and the tag
#: ``tour`` lets the pages link ``tour/index.html`` (``.. only:: tour``).
TOUR = Path(__file__).parent / "_tour"
if (TOUR / "index.html").is_file():
    tags.add("tour")  # noqa: F821 - Sphinx puts `tags` in this namespace


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


def setup(app: Any) -> dict[str, Any]:
    app.connect("build-finished", copy_tour)
    return {"parallel_read_safe": True}
