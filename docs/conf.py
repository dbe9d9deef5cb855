"""Sphinx configuration of nasjax's documentation (``sphinx-build -W docs docs/_build``)."""

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
nb_execution_mode = "off"  # the test suite runs the pages' code (tests/test_docs.py)
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
