from __future__ import annotations

import pytest

from tests import labutil


@pytest.fixture(scope="session")
def lab():
    """The running lab: `playbooks/lab.yml` (idempotent) brings it up once per session."""
    proc = labutil.playbook("lab.yml", check=True, timeout=1800)
    return proc
