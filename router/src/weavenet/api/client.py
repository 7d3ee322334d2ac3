"""Client of the local API over its unix socket (stdlib only: the CLI must start fast)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path


class RouterNotRunning(Exception):
    pass


class APIError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(str(self._path))
        self.sock = s


class Client:
    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.path = socket_path
        self.timeout = timeout

    def request(self, method: str, url: str, body: dict | None = None) -> bytes:
        if not self.path.exists():
            raise RouterNotRunning(f"weave router is not running (no socket at {self.path})")
        conn = _UnixConnection(self.path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise RouterNotRunning(f"weave router is not running (nothing answers on {self.path})") from None
        except OSError as e:
            raise APIError(f"cannot talk to weave router at {self.path}: {e}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                msg = json.loads(payload).get("error", "")
            except ValueError:
                msg = payload.decode(errors="replace").strip()
            raise APIError(msg or f"HTTP {resp.status}")
        return payload

    def json(self, method: str, url: str, body: dict | None = None) -> dict:
        return json.loads(self.request(method, url, body))

    def report(self) -> dict:
        return self.json("GET", "/report")
