"""The one compiled part: the sleeve's C lane (weavenet.datapath._lane), optional.

Built when a C compiler and Python's headers are there (scripts/bootstrap installs them), against the stable
ABI of Python 3.11 (a cp311-abi3 wheel: any later CPython on the same architecture can load it). Without them,
or with WEAVENET_PURE=1, the router runs the same sleeve in Python only, slower. Everything else about the
package is in pyproject.toml."""

import os

from setuptools import Extension, setup

lane = Extension("weavenet.datapath._lane", ["src/weavenet/datapath/_lane.c"], optional=True, py_limited_api=True,
                 define_macros=[("Py_LIMITED_API", "0x030B0000")],
                 extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-braces"])
pure = bool(os.environ.get("WEAVENET_PURE"))
setup(ext_modules=[] if pure else [lane], options={} if pure else {"bdist_wheel": {"py_limited_api": "cp311"}})
