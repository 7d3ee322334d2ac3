"""Client of the local API over its unix socket (stdlib only: the CLI must start fast)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..weaver.paths import Paths


class RouterNotRunning(Exception):
    pass


class APIError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when the router answered, else None


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
    def __init__(self, socket_path: Path, token_path: Path, timeout: float = 10.0) -> None:
        self.path = socket_path
        self.token_path = token_path  # Paths.api_token: sent as "Authorization: Bearer"
        self.timeout = timeout

    @classmethod
    def for_paths(cls, paths: Paths, timeout: float = 10.0) -> Client:
        return cls(paths.socket, paths.api_token, timeout)

    def _token_problem(self) -> APIError:
        return APIError(f"cannot read API token {self.token_path} (is the router running, are you root?)")

    def _token(self) -> str | None:
        """The router's API token; None when there is no file (a router too old to write one)."""
        try:
            token = self.token_path.read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):  # PermissionError for a non-root user: the usual case
            raise self._token_problem() from None
        if not token:
            raise self._token_problem()
        return token

    def request(self, method: str, url: str, body: dict | None = None) -> bytes:
        if not self.path.exists():
            raise RouterNotRunning(f"weave router is not running (no socket at {self.path})")
        token = self._token()
        conn = _UnixConnection(self.path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise RouterNotRunning(f"weave router is not running (nothing answers on {self.path})") from None
        except OSError as e:
            raise APIError(f"cannot talk to weave router at {self.path}: {e}") from None
        finally:
            conn.close()
        if resp.status == 401 and token is None:
            raise self._token_problem()
        if resp.status >= 400:
            try:
                msg = json.loads(payload).get("error", "")
            except (ValueError, AttributeError):
                msg = payload.decode(errors="replace").strip()
            lines = str(msg).strip().splitlines()
            raise APIError(lines[0] if lines else f"HTTP {resp.status}", resp.status)
        return payload

    def json(self, method: str, url: str, body: dict | None = None) -> dict:
        return json.loads(self.request(method, url, body))

    def report(self) -> dict:
        return self.json("GET", "/report")
