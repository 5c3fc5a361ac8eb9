"""Sphinx configuration: the fastckpt documentation and its API reference (autodoc).

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs build/docs

autodoc imports the *installed* fastckpt (the API reference needs its compiled extension)."""

import os
import re

_here = os.path.dirname(os.path.abspath(__file__))
# The one version: fastckpt/version.py (also read by pyproject.toml and CMake).
with open(os.path.join(_here, os.pardir, "fastckpt", "version.py"), encoding="utf-8") as _f:
    release = re.search(r'^VERSION = "([^"]+)"$', _f.read(), re.M).group(1)
version = ".".join(release.split(".")[:2])

project = "fastckpt"
author = "the fastckpt authors"
copyright = "the fastckpt authors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Keras-style docstrings: "Args:", "Returns:", "Raises:".
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"fastckpt {release}"
