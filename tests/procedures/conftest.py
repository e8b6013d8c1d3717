"""The procedure playbooks' own lab: a separate root and ports (.lab-procedures, 55632/8200/3201), so
these tests never touch the default lab (.lab, 55432/8000/3001) other tests use. Brought up once per
session; stopped (lab_down.yml) when the session ends, so nothing keeps running."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests import labutil

ROOT = labutil.ROOT
LAB_ROOT = ROOT / ".lab-procedures"
PG_PORT = 55632
BACKEND_PORT = 8200
WORKERS_PORT = 3201
BACKEND_URL = f"http://127.0.0.1:{BACKEND_PORT}"
WORKERS_URL = f"http://127.0.0.1:{WORKERS_PORT}"
BACKUP_DIR = LAB_ROOT / "postgres" / "backups"
BASEBACKUP_DIR = LAB_ROOT / "postgres" / "basebackups"
BASELINE_FILE = LAB_ROOT / "backend" / "baseline.json"
SUPER_DSN = f"postgresql://postgres:LabSuperPw-5d8e0b44@127.0.0.1:{PG_PORT}/chatai"
# Every secret of inventories/lab/group_vars/all.yml, read from the file itself so a new one is covered.
_GROUP_VARS = (ROOT / "inventories" / "lab" / "group_vars" / "all.yml").read_text()
SECRETS = tuple(sorted({line.split(":", 1)[1].strip() for line in _GROUP_VARS.splitlines()
                        if line.split(":", 1)[0].strip().endswith(("_password", "_secret_key"))}
                       | set(labutil.SECRETS)))
WEBHOOK_TOKEN = "xoxb-ProcTestWebhookToken-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcLab:
    """Runs playbooks against the procedures lab; every run is -v and checked for secrets."""

    def __init__(self, artifacts: Path):
        self.artifacts = artifacts
        self.env = {"REPLYX_LAB_ROOT": str(LAB_ROOT), "REPLYX_PG_PORT": PG_PORT,
                    "REPLYX_BACKEND_PORT": BACKEND_PORT, "REPLYX_WORKERS_PORT": WORKERS_PORT,
                    "REPLYX_ARTIFACTS_DIR": str(artifacts), "REPLYX_WEBHOOK_URL": ""}

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
def plab(tmp_path_factory):
    """The procedures lab, up for the session and stopped at its end."""
    lab = ProcLab(tmp_path_factory.mktemp("artifacts"))
    up = labutil.playbook("lab.yml", timeout=1800, **lab.env)
    try:
        assert up.returncode == 0, f"lab.yml failed:\n{up.stdout[-6000:]}\n{up.stderr[-3000:]}"
        yield lab
    finally:
        down = labutil.playbook("lab_down.yml", timeout=600, **lab.env)
        assert down.returncode == 0, f"lab_down.yml failed:\n{down.stdout[-4000:]}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
