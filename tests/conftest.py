"""Project-wide pytest setup: the repository and the collection on sys.path; the lab teardown last."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "collection"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def pytest_configure(config):
    config.addinivalue_line("markers", "lab_teardown: stops the lab; runs after every other test")


def pytest_collection_modifyitems(config, items):
    # The test of `make lab-down` stops the lab every lab test shares: it goes last, whatever
    # files were collected, and leaves nothing running behind the test session.
    items.sort(key=lambda item: item.get_closest_marker("lab_teardown") is not None)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    """The running lab: `playbooks/lab.yml` (idempotent) brings it up once per session."""
    from tests import labutil  # noqa: PLC0415

    return labutil.playbook("lab.yml", check=True, timeout=1800)
