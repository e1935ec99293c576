"""Sphinx configuration for convlens."""

from __future__ import annotations

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
html_theme = "alabaster"
exclude_patterns = ["_build"]


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


sphinx_gallery_conf = {
    "examples_dirs": str(Path(__file__).parent.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "image_scrapers": (figure_scraper,),
    "download_all_examples": False,
    "abort_on_example_error": True,
    "reset_modules": (),
}
# The gallery's scraper is a function, which Sphinx cannot pickle into its environment cache.
suppress_warnings = ["config.cache"]
