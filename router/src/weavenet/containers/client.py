"""The Docker Engine, seen from weavenet: find a container, run one, follow events.

Every Docker failure becomes a ``ValueError`` (the user named something wrong: unknown or stopped
container, missing image) or a ``DockerUnavailable`` (no engine to talk to), each with a one-line
message; callers never see the SDK's multi-line exceptions.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import docker
from docker import errors as derrors

from .runargs import RunSpec

# A call that needs more than this is stuck: the engine answers `inspect` in milliseconds.
API_TIMEOUT = 30


class DockerUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    pid: int          # 0 when not running
    running: bool
    fqdn: str = ""      # hostname[.domainname], as the container knows itself

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _oneline(e: BaseException) -> str:
    text = e.explanation or str(e) if isinstance(e, derrors.APIError) else str(e)
    text = str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
    return text


def _info(c) -> ContainerInfo:
    state = c.attrs.get("State", {})
    cfg = c.attrs.get("Config", {})
    host, domain = cfg.get("Hostname") or "", cfg.get("Domainname") or ""
    return ContainerInfo(id=c.id, name=c.name, pid=int(state.get("Pid") or 0), running=bool(state.get("Running")),
                         fqdn=f"{host}.{domain}" if host and domain else host)


class Docker:
    """Thin wrapper over ``docker.DockerClient`` with weavenet's error messages."""

    def __init__(self, client=None) -> None:
        self._client = client

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=API_TIMEOUT)
                self._client.ping()
            except Exception as e:  # noqa: BLE001 - any failure here means "no engine"
                self._client = None
                raise DockerUnavailable(f"cannot talk to Docker at {_where()}: {_oneline(e)}") from None
        return self._client

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except derrors.NotFound:
            raise
        except derrors.APIError as e:
            raise ValueError(_oneline(e)) from None
        except (derrors.DockerException, OSError) as e:
            self._client = None  # reconnect next time (the engine may have restarted)
            raise DockerUnavailable(f"cannot talk to Docker at {_where()}: {_oneline(e)}") from None

    def find(self, ref: str) -> ContainerInfo:
        """By name or (short) id; ValueError if there is no such container."""
        try:
            return _info(self._call(self.client.containers.get, ref))
        except derrors.NotFound:
            raise ValueError(f"no such container: {ref}") from None

    def find_running(self, ref: str) -> ContainerInfo:
        info = self.find(ref)
        if not info.running or not info.pid:
            raise ValueError(f"container {info.name} ({info.id[:12]}) is not running")
        return info

    def exists(self, container_id: str) -> ContainerInfo | None:
        try:
            return self.find(container_id)
        except ValueError:
            return None

    def run(self, spec: RunSpec) -> ContainerInfo:
        """Create and start a container (docker run -d semantics). On failure nothing is left behind."""
        images = self.client.images
        try:
            if spec.pull == "always":
                self._pull(spec.image)
            else:
                self._call(images.get, spec.image)
        except derrors.NotFound:
            if spec.pull == "never":
                raise ValueError(f"image not found: {spec.image} (and --pull never)") from None
            self._pull(spec.image)
        try:
            c = self._call(self.client.containers.create, spec.image, spec.command, detach=True, **spec.kwargs)
        except derrors.NotFound as e:
            raise ValueError(_oneline(e)) from None
        except TypeError as e:  # an option the SDK does not know in this combination
            raise ValueError(f"cannot create container: {e}") from None
        try:
            self._call(c.start)
            c.reload()
        except BaseException:
            self.remove(c.id)
            raise
        info = _info(c)
        if not info.running:
            # It started and already ended (e.g. a command that exits at once): nothing to attach to.
            logs = ""
            with contextlib.suppress(Exception):  # only for the message
                logs = c.logs(tail=1).decode(errors="replace").strip()
            self.remove(c.id)
            raise ValueError(f"container exited right after start{': ' + logs if logs else ''}")
        return info

    def _pull(self, image: str) -> None:
        try:
            self._call(self.client.images.pull, image)
        except (derrors.NotFound, ValueError) as e:
            raise ValueError(f"image not found: {image} (pull failed: {_oneline(e)})") from None

    def remove(self, container_id: str) -> None:
        """docker rm -f; a container that is already gone is fine."""
        with contextlib.suppress(derrors.NotFound):
            self.client.containers.get(container_id).remove(force=True)

    def events(self):
        """Stream of container start/die/destroy events (iterate it; ``close()`` ends it)."""
        filters = {"type": "container", "event": ["start", "die", "destroy"]}
        return self._call(self.client.events, decode=True, filters=filters)
