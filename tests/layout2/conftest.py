"""The second lab layout (inventories/lab-layout2: database replyx_prod, user replyx_app, PM2 names
replyx-api/replyx-bots, a root with a space, a quote and a non-ASCII character, ports 55472/8470/3471 or
REPLYX_LAYOUT2_*), its playbooks run from a copy of the checkout under `.lab-layout2/checkout "MVP 13" été's`
(labutil.Layout.copy_checkout). One lab for the module: brought up fresh by playbooks/lab.yml at the start and stopped
by lab_down.yml at the end, whatever happened. Every run is recorded: the last test scans them all."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import labutil

LAYOUT = labutil.Layout.resolve("layout2")


class Layout2Lab:
    """Runs playbooks on the layout with an artifacts directory of its own; keeps every finished run."""

    def __init__(self, layout: labutil.Layout, artifacts: Path):
        self.layout = layout
        self.artifacts = artifacts
        self.runs: list[tuple[str, subprocess.CompletedProcess]] = []

    def run(self, name: str, *args: str, check: bool = False, timeout: int = 900) -> subprocess.CompletedProcess:
        proc = self.layout.playbook(name, *args, check=False, timeout=timeout,
                                    REPLYX_ARTIFACTS_DIR=self.artifacts, REPLYX_WEBHOOK_URL="")
        self.runs.append((" ".join((name,) + args), proc))
        if check and proc.returncode != 0:
            raise AssertionError(f"{name} {args} failed (rc={proc.returncode}):\n{proc.stdout[-6000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        return proc


@pytest.fixture(scope="module")
def l2(tmp_path_factory):
    # artifacts (reports, plans, triage) under a path with a space, a quote and a non-ASCII character too
    lab = Layout2Lab(LAYOUT, tmp_path_factory.mktemp("layout2 artifacts \u00e9't\u00e9"))
    LAYOUT.copy_checkout()
    try:
        if LAYOUT.root.exists():  # left by an interrupted run: stop it and start from nothing
            lab.run("lab_down.yml", check=True)
            shutil.rmtree(LAYOUT.root)
        lab.run("lab.yml", check=True, timeout=1800)
        yield lab
    finally:
        down = LAYOUT.playbook("lab_down.yml", timeout=600)
        assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]
