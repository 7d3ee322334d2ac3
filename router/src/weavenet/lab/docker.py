"""A Docker engine and a tiny image for the lab and the tests, on a machine with no registry.

``engine()`` uses a running dockerd or starts one (and stops only what it started). The image is
Debian's static busybox, imported from a rootfs (``docker import``), since nothing can be pulled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker

IMAGE = "weavenet/busybox:latest"
BUSYBOX = "/bin/busybox"
START_TIMEOUT = 60.0


def _ping() -> bool:
    try:
        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not up (yet)"
        return False


def start_engine(logdir: Path) -> int | None:
    """Start dockerd unless one answers; returns the pid of the one we started (None: already up)."""
    if _ping():
        return None
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd not found: install docker.io (scripts/bootstrap does)")
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "dockerd.log", "ab") as log:
        # No iptables: the lab's hosts are namespaces with their own tables, and dockerd's FORWARD
        # policy (DROP) must not leak into this machine's bridges.
        proc = subprocess.Popen(["dockerd", "--iptables=false", "--ip6tables=false"], stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while not _ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_engine(proc.pid)
            raise RuntimeError(f"dockerd did not start; see {logdir / 'dockerd.log'}")
        time.sleep(0.2)
    return proc.pid


def stop_engine(pid: int, timeout: float = 30.0) -> None:
    """Stop a dockerd started by start_engine (its whole process group: containerd goes too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def engine(logdir: Path | None = None) -> Iterator[None]:
    """A reachable Docker engine for the duration of the block (stopped after if we started it)."""
    pid = start_engine(logdir or Path(tempfile.mkdtemp(prefix="weavenet-dockerd-")))
    try:
        yield
    finally:
        if pid is not None:
            stop_engine(pid)


def ensure_image(name: str = IMAGE) -> str:
    """Import a busybox image unless it exists; returns its name."""
    client = docker.from_env()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(name)
        return name
    if not os.path.exists(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} not found: install busybox-static (scripts/bootstrap does)")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "rootfs")
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin/busybox")
        for a in applets:
            if a != "busybox":
                (root / "bin" / a).symlink_to("busybox")
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        tar = Path(tmp, "rootfs.tar")
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        with open(tar, "rb") as f:
            client.api.import_image_from_data(f.read(), repository=name.split(":")[0], tag=name.split(":")[1],
                                              changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
    client.images.get(name)
    return name
