import os
import time

import pytest

from weavenet.lab.netns import NetnsLab


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _need_root():
    # These tests build real namespaces; running them without root is a setup error, not a skip.
    assert os.geteuid() == 0, "integration tests need root (network namespaces)"


@pytest.fixture
def lab_factory():
    labs = []

    def make(n: int) -> NetnsLab:
        lab = NetnsLab(n)
        labs.append(lab)
        lab.create()
        return lab

    yield make
    for lab in labs:
        lab.close()


def wait_for(cond, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


@pytest.fixture(scope="session")
def docker_image():
    """A Docker engine (started for the session if none runs, stopped after) and a local busybox image."""
    from weavenet.lab import docker as labdocker

    with labdocker.engine():
        yield labdocker.ensure_image()
