import os
import shutil
from pathlib import Path

import pytest

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


@pytest.fixture(scope="session", autouse=True)
def _weave_on_path():
    # The lab runs `weave` inside namespaces: make sure it is the one from this checkout's venv.
    if (VENV_BIN / "weave").exists():
        os.environ["PATH"] = f"{VENV_BIN}:{os.environ['PATH']}"
    assert shutil.which("weave"), "the weave command is not installed (run scripts/test)"
