"""Bad input to the lab playbooks: clear errors, nothing changed."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import labutil

pytestmark = pytest.mark.lab


def _head(path):
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_unknown_release_fails_before_touching_anything_and_lists_releases(lab):
    head_before = _head(labutil.APP_DIR)
    history_before = labutil.release_history("backend")
    proc = labutil.playbook("deploy.yml", "-e", "release=v9.9.9")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown release 'v9.9.9'" in out
    for tag in ("v1.0.0", "v1.1.0", "v1.2.0"):
        assert tag in out
    assert "stable=v1.0.0" in out
    assert _head(labutil.APP_DIR) == head_before
    assert labutil.release_history("backend") == history_before
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200


def test_unknown_app_is_refused():
    proc = labutil.playbook("deploy.yml", "-e", "app=frontend", "-e", "release=v1.0.0")
    assert proc.returncode != 0
    assert "app=backend|workers" in proc.stdout


def test_port_already_taken_gives_a_clear_error_naming_it():
    # The throwaway lab root must be traversable by the postgres OS user (pytest's tmp_path is 0700).
    root = Path(tempfile.mkdtemp(prefix="replyx-lab-port-"))
    root.chmod(0o755)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = labutil.playbook("lab.yml", "--limit", "postgres", REPLYX_LAB_ROOT=root / "lab",
                                REPLYX_PG_PORT=port)
        assert proc.returncode != 0
        assert f"port {port} on 127.0.0.1 is already in use" in " ".join(proc.stdout.split())
        # initdb ran in the throwaway root, but no server was started there
        assert (root / "lab" / "postgres" / "data" / "PG_VERSION").exists()
        assert not (root / "lab" / "postgres" / "data" / "postmaster.pid").exists()
    finally:
        holder.close()
        shutil.rmtree(root, ignore_errors=True)
