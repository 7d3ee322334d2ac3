"""Follows the Docker engine's container events on its own thread (``weave-docker-events``) and queues
them onto the Attachments actor, which owns what they change (thread map: docs/architecture.md).

Docker may be absent, start later, or restart: the watcher keeps trying (quietly) and, each time it
(re)connects, asks for a reconcile, since events sent while it was away are lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from ..containers.client import Docker, DockerUnavailable

log = logging.getLogger("weavenet.docker")

RETRY_MIN, RETRY_MAX = 0.5, 10.0


class EventWatcher:
    def __init__(self, docker: Docker, on_event: Callable[[str, str], None],
                 on_connect: Callable[[], None]) -> None:
        self.docker = docker
        self.on_event = on_event
        self.on_connect = on_connect
        self._stop = threading.Event()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name="weave-docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead stream
                stream.close()

    def _run(self) -> None:
        delay, said_unavailable = RETRY_MIN, False
        while not self._stop.is_set():
            try:
                self._stream = self.docker.events()
                if said_unavailable:
                    log.info("Docker is reachable again")
                said_unavailable, delay = False, RETRY_MIN
                self.on_connect()
                for ev in self._stream:
                    action, cid = ev.get("Action") or ev.get("status"), ev.get("id")
                    if action and cid:
                        self.on_event(action, cid)
            except DockerUnavailable as e:
                if not said_unavailable:
                    log.info("%s (will keep trying)", e)
                    said_unavailable = True
            except Exception:  # a bug while handling one event must not end the watcher
                if not self._stop.is_set():
                    log.exception("Docker event handling failed")
            self._stream = None
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)
