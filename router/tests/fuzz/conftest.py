"""Property/fuzz tests for every decoder that takes network bytes and every gossip merge.

Budget: the ``ci`` profile (default) keeps the whole folder to well under a minute; ``scripts/fuzz
MINUTES`` runs the same tests under the ``long`` profile over and over until the time is spent, with
a fresh seed each round.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=int(os.environ.get("WEAVE_FUZZ_EXAMPLES", "150")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], derandomize=False)
settings.register_profile("long", max_examples=int(os.environ.get("WEAVE_FUZZ_EXAMPLES", "1000")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.fuzz)
