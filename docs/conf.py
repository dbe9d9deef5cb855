"""Sphinx configuration of nasjax's documentation (``sphinx-build -W docs docs/_build``)."""

import os

project = "nasjax"
author = "nasjax authors"
copyright = "2026, nasjax authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The test suite runs the pages' code (tests/test_docs.py); a build for reading runs the
# notebooks too, to show their outputs (drawings, tables): NASJAX_DOCS_EXECUTE=cache.
nb_execution_mode = os.environ.get("NASJAX_DOCS_EXECUTE", "off")
nb_execution_timeout = 300
source_suffix = {".md": "myst-nb"}
exclude_patterns = ["_build"]
suppress_warnings = ["myst.header"]

autodoc_typehints = "none"  # the docstrings say what the types are
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "alabaster"
html_title = "nasjax"
