"""Sphinx configuration of the skdeep documentation.

Builds offline: no intersphinx inventories are fetched, nothing is downloaded, and the examples are
included as source (they are run by tests/test_examples.py, not by the docs build).

    make docs      # sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, installed or not

import skdeep  # noqa: E402

project = "skdeep"
author = "The skdeep developers"
copyright = "The skdeep developers"  # noqa: A001 - Sphinx's name
version = release = skdeep.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",  # the user guide's pictures, made by the build
]
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]

# --- API reference -------------------------------------------------------------------------------
autosummary_generate = True  # stub pages under docs/api/generated/ (not in git)
autosummary_imported_members = True
autodoc_default_options = {"inherited-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types, in words
numpydoc_show_class_members = False  # the autosummary class template lists the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --- pages ---------------------------------------------------------------------------------------
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "code"  # `text` in reST is inline code, as a data scientist expects
pygments_style = "sphinx"
highlight_language = "python3"

# --- HTML ----------------------------------------------------------------------------------------
# pydata-sphinx-theme (the scikit-learn ecosystem's theme) when installed (pip install
# "skdeep[docs]"), else Sphinx's built-in alabaster: the build never needs the network.
if importlib.util.find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        "header_links_before_dropdown": 7,
    }
else:
    html_theme = "alabaster"
    html_theme_options = {
        "description": "Pretrained CNNs as scikit-learn estimators",
        "fixed_sidebar": True,
        "page_width": "1100px",
        "sidebar_width": "240px",
    }
html_title = f"skdeep {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


def _skip_metadata_routing(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_{fit,score,...}_request`` methods.

    scikit-learn adds them to estimators whose methods take ``sample_weight``; they are
    documented in scikit-learn's metadata-routing guide, and their docstrings link to its
    glossary, which this documentation does not have.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_routing)
