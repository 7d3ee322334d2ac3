"""The one compiled part: the sleeve's common case in C (weavenet.datapath._lane), optional.

Built when a C compiler and Python's headers are there (scripts/bootstrap installs them); without them, or
with WEAVENET_PURE=1 (the collection's wheel, which hosts with other Pythons install), the router runs the
same sleeve in Python only, slower. Everything else about the package is in pyproject.toml."""

import os

from setuptools import Extension, setup

lane = Extension("weavenet.datapath._lane", ["src/weavenet/datapath/_lane.c"], optional=True,
                 extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-braces"])
setup(ext_modules=[] if os.environ.get("WEAVENET_PURE") else [lane])
