"""`make lab-down` leaves no process of the lab running and nothing listening on its ports."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests import labutil


def _lab_processes() -> list[str]:
    # A trailing slash: other labs' roots (.lab-procedures, ...) only share the prefix.
    root = str(labutil.LAB_ROOT).rstrip("/") + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if root in cmd or (cwd + "/").startswith(root):
            found.append(f"{pid}: {cmd.strip()} (cwd {cwd})")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _lab_status() -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "lab-status"], cwd=labutil.ROOT, env=labutil.env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.lab
@pytest.mark.lab_teardown
def test_lab_down_stops_everything(lab):
    assert _lab_processes(), "the lab should be running before lab-down"
    up = _lab_status()
    assert up.returncode == 0, up.stdout + up.stderr[-2000:]
    lines = up.stdout.splitlines()
    assert [line.split(":", 1)[0].strip() for line in lines] == ["postgres", "backend", "workers"], up.stdout
    assert lines[0].startswith("postgres : up on ") and lines[1].startswith("backend  : up, release ")
    assert " active, release " in lines[2]

    proc = subprocess.run(["make", "lab-down"], cwd=labutil.ROOT, env=labutil.env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    down = _lab_status()
    assert down.returncode != 0
    assert [line.split(":", 1)[1].split()[0] for line in down.stdout.splitlines()] == ["DOWN"] * 3, down.stdout
    assert _lab_processes() == []
    for port in (labutil.PG_PORT, labutil.BACKEND_PORT, labutil.WORKERS_PORT):
        assert not _listening(port), port
    assert not (labutil.LAB_ROOT / "postgres" / "data" / "postmaster.pid").exists()
