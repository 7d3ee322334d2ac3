"""Headless Chromium (Debian package `chromium`) in a host's network namespace, for the live page's lab test
and the README's screenshot: load a URL, let the page's scripts run, then dump the DOM or take a screenshot.
Each call is its own browser with a throw-away profile, ended (also on a timeout) before returning."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

TIMEOUT = 90.0


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed (scripts/bootstrap installs the Debian package)")
    return exe


def run(url: str, *, netns: str | None = None, screenshot: Path | None = None, size: tuple[int, int] = (1280, 1100),
        budget_ms: int = 8000) -> str:
    """The DOM after `budget_ms` of the page's (virtual) time, as HTML; with `screenshot`, a PNG there too."""
    with tempfile.TemporaryDirectory(prefix="weave-chromium-") as profile:
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                f"--window-size={size[0]},{size[1]}"]
        args += [f"--screenshot={screenshot}"] if screenshot is not None else ["--dump-dom"]
        cmd = (["ip", "netns", "exec", netns] if netns else []) + [*args, url]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                           env={"HOME": profile, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if p.returncode != 0:
            err = [line for line in p.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"chromium failed ({p.returncode}): {err[-1] if err else ''}")
        return p.stdout
