"""The repository's Python scripts without a .py suffix (scripts/gen-settings, scripts/gen-sanity-ignores),
loaded as modules so tests can check that what they generate is what is committed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[3]


def load(name: str) -> ModuleType:
    module = name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(module, str(REPO / "scripts" / name))
    spec = importlib.util.spec_from_loader(module, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod
