"""Headless Chromium (Debian package `chromium`) in a host's network namespace, for the live page's lab test
and the README's screenshot: load a URL, let the page's scripts run, then dump the DOM or take a screenshot.
Each call is its own browser with a throw-away profile, ended (also on a timeout) before returning."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
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


# A page kept open (the live page must refresh itself): Chromium with its DevTools endpoint on the namespace's
# loopback, read with Runtime.evaluate by a short helper run inside the same namespace.
_EVAL = r"""
import asyncio, json, sys, urllib.request
import aiohttp
port, expr = int(sys.argv[1]), sys.argv[2]
pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
async def main():
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url, max_msg_size=1 << 24) as ws:
        await ws.send_json({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expr,
                                                                               "returnByValue": True}})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("id") == 1:
                print(json.dumps(data.get("result", {}).get("result", {}).get("value")))
                return
asyncio.run(asyncio.wait_for(main(), 15))
"""


class LivePage:
    """One headless Chromium showing `url` until closed; `evaluate(js)` reads the page as it is now."""

    def __init__(self, url: str, netns: str) -> None:
        self.netns = netns
        self._profile = tempfile.TemporaryDirectory(prefix="weave-chromium-")
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                f"--user-data-dir={self._profile.name}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", url]
        self._proc = subprocess.Popen(["ip", "netns", "exec", netns, *args], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True,
                                      env={"HOME": self._profile.name, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self.port = 0
        active = Path(self._profile.name) / "DevToolsActivePort"   # Chromium writes its port here
        for _ in range(300):
            if active.exists() and active.read_text().split("\n", 1)[0].strip().isdigit():
                self.port = int(active.read_text().split("\n", 1)[0])
                break
            if self._proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.port:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")

    def evaluate(self, expression: str):
        import json
        import sys
        p = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", _EVAL, str(self.port),
                            expression], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"DevTools evaluate failed: {p.stderr.strip().splitlines()[-1:]}")
        return json.loads(p.stdout)

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._profile.cleanup()

    def __enter__(self) -> LivePage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
