"""The procedure playbooks run against the default lab (.lab, or where REPLYX_LAB_ROOT and the port
variables move it), brought up once per session by the `lab` fixture and stopped by the lab-down test at
the end. Each run writes its artifacts to the session's own directory, never to artifacts/."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import labutil

ROOT = labutil.ROOT
BACKUP_DIR = labutil.LAB_ROOT / "postgres" / "backups"
BASEBACKUP_DIR = labutil.LAB_ROOT / "postgres" / "basebackups"
BASELINE_FILE = labutil.LAB_ROOT / "backend" / "baseline.json"
SUPER_DSN = labutil.SUPER_DSN
# Every secret of inventories/lab/group_vars/all.yml, read from the file itself so a new one is covered.
_GROUP_VARS = (ROOT / "inventories" / "lab" / "group_vars" / "all.yml").read_text()
SECRETS = tuple(sorted({line.split(":", 1)[1].strip() for line in _GROUP_VARS.splitlines()
                        if line.split(":", 1)[0].strip().endswith(("_password", "_secret_key"))}
                       | set(labutil.SECRETS)))
WEBHOOK_TOKEN = "xoxb-ProcTestWebhookToken-42"


class ProcLab:
    """Runs playbooks against the lab; every run is -v and checked for secrets."""

    def __init__(self, artifacts: Path):
        self.artifacts = artifacts
        # the lab's location comes from the environment, as labutil reads it
        self.env = {"REPLYX_ARTIFACTS_DIR": str(artifacts), "REPLYX_WEBHOOK_URL": ""}

    def run(self, name: str, *args: str, check: bool = False, verbose: bool = True, timeout: int = 900,
            **env) -> subprocess.CompletedProcess:
        merged = {**self.env, **env}
        proc = labutil.playbook(name, *((["-v"] if verbose else []) + list(args)), check=check,
                                timeout=timeout, **merged)
        leaked = [s for s in SECRETS + (WEBHOOK_TOKEN,) if s in proc.stdout or s in proc.stderr]
        assert not leaked, f"{name}: secret(s) {leaked} in the output"
        return proc

    def artifact_files(self) -> list[Path]:
        return sorted(p for p in self.artifacts.rglob("*") if p.is_file())


@pytest.fixture()
def proc(tmp_path):
    """Playbook runs that need no running lab (roles exercised by tests/procedures/playbooks)."""
    return ProcLab(tmp_path / "artifacts")


@pytest.fixture(scope="session")
def plab(lab, tmp_path_factory):
    """The running lab, with a session directory of its own for the procedures' artifacts."""
    return ProcLab(tmp_path_factory.mktemp("artifacts"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
