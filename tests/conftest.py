"""Project-wide pytest setup: the repository and the collection on sys.path; the lab teardown last."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "collection"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


class SuiteProgress:
    """One line when the run enters a suite (a directory of tests): its name, how many tests, the clock,
    and how long the previous suite took. pytest's dots alone say nothing for an hour."""

    def __init__(self, config):
        self.config = config
        self.counts: dict[str, int] = {}
        self.current = None
        self.started = 0.0
        self.took: dict[str, float] = {}

    @staticmethod
    def suite(nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if "/tests/unit/" in path:
            return path.split("/tests/unit/", 1)[0] + "/tests/unit"
        parts = path.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else path

    def pytest_collection_finish(self, session):
        for item in session.items:
            key = self.suite(item.nodeid)
            self.counts[key] = self.counts.get(key, 0) + 1

    def pytest_runtest_logstart(self, nodeid, location):
        key = self.suite(nodeid)
        if key == self.current:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        now = time.monotonic()
        took = ""
        if self.current:
            self.took[self.current] = self.took.get(self.current, 0.0) + now - self.started
            took = f"; the previous suite took {now - self.started:.0f} s"
        self.current, self.started = key, now
        if reporter is not None:
            if reporter._tw.width_of_current_line:  # noqa: SLF001  (after a line of dots)
                reporter.write("\n")
            reporter.write_line(f"[{time.strftime('%H:%M:%S')}] {key}: {self.counts.get(key, 0)} tests{took}")

    def pytest_terminal_summary(self, terminalreporter):
        if self.current:
            self.took[self.current] = self.took.get(self.current, 0.0) + time.monotonic() - self.started
            self.current = None
        if len(self.took) > 1:
            terminalreporter.write_sep("=", "time per suite")
            for key, secs in sorted(self.took.items(), key=lambda kv: -kv[1]):
                terminalreporter.write_line(f"{secs:8.0f} s  {key} ({self.counts.get(key, 0)} tests)")


def pytest_configure(config):
    config.addinivalue_line("markers", "lab_teardown: stops the lab; runs after every other test")
    if not config.pluginmanager.has_plugin("replyx-suite-progress"):
        config.pluginmanager.register(SuiteProgress(config), "replyx-suite-progress")


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
