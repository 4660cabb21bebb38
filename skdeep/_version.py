"""The version of skdeep: its one home, read by the package, by saved files and by the build.

A module of its own, importing nothing, so that code inside the package can read the version
without importing ``skdeep/__init__`` (an import cycle), and setuptools can read it statically.
"""

__version__ = "0.1.0.dev0"
