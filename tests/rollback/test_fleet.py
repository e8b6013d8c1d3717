"""The orchestration on a fleet (inventories/lab-fleet: one PostgreSQL, two backends, two workers
hosts on this machine, own roots and ports): every step acts on every host of its group, rolling
batches keep one backend serving. A release that will not start on the second backend: molecule/chaos
(wont-start, on real hosts behind HAProxy)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests import labutil
from tests.rollback.conftest import APPROVALS

pytestmark = pytest.mark.lab

ROOT = labutil.ROOT
FLEET_ROOT = Path(os.environ.get("REPLYX_FLEET_ROOT") or ROOT / ".lab-fleet")
PORT_BASE = int(os.environ.get("REPLYX_FLEET_PORT_BASE") or 8100)
BACKENDS = {"backend1": PORT_BASE + 1, "backend2": PORT_BASE + 2}
WORKERS = {"workers1": PORT_BASE + 11, "workers2": PORT_BASE + 12}


def fleet(playbook: str, *args: str, check: bool = False, timeout: int = 1200) -> subprocess.CompletedProcess:
    return labutil.playbook(playbook, "-i", "inventories/lab-fleet", *args, check=check, timeout=timeout,
                            REPLYX_FLEET_ROOT=FLEET_ROOT)


def tag(host: str) -> str:
    return subprocess.run(["git", "-C", str(FLEET_ROOT / host / "app"), "describe", "--tags", "--exact-match", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def pm2_pids(host: str, name: str) -> list[int]:
    out = subprocess.run([str(labutil.PM2), "jlist"], capture_output=True, text=True,
                         env=dict(os.environ, PM2_HOME=str(FLEET_ROOT / host / "pm2"))).stdout
    procs = json.loads(out[out.index("["):]) if "[" in out else []
    return sorted(p["pid"] for p in procs if p["name"] == name and p["pid"])


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def revision() -> str:
    import psycopg  # noqa: PLC0415

    port = int(os.environ.get("REPLYX_FLEET_PG_PORT") or 55442)
    with psycopg.connect(f"postgresql://postgres:LabSuperPw-5d8e0b44@127.0.0.1:{port}/chatai", autocommit=True) as conn:
        return conn.execute("select version_num from alembic_version").fetchone()[0]


@pytest.fixture(scope="module")
def fleet_lab():
    fleet("lab.yml", check=True, timeout=2400)
    yield
    fleet("lab_down.yml", timeout=600)


@pytest.fixture
def bad_fleet(fleet_lab, tmp_path):
    """Every backend on the bad release v1.2.0 (schema at a1b2c3d4e5f6), workers on v2.0.0; deployed only
    when the fleet is not there already (a rescued run leaves it there)."""
    there = (revision() == "a1b2c3d4e5f6" and [tag(h) for h in BACKENDS] == ["v1.2.0", "v1.2.0"]
             and all(health(p) == 200 for p in BACKENDS.values()) and [tag(h) for h in WORKERS] == ["v2.0.0", "v2.0.0"])
    if not there:
        if revision() != "a1b2c3d4e5f6":
            fleet("deploy.yml", "-e", "release=v1.1.0", check=True)
        fleet("deploy.yml", "-e", "release=bad", check=True)
    assert [tag(h) for h in BACKENDS] == ["v1.2.0", "v1.2.0"]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    return artifacts


def _run(artifacts, *args):
    return labutil.playbook("rollback.yml", "-i", "inventories/lab-fleet", *args, timeout=1200,
                            REPLYX_FLEET_ROOT=FLEET_ROOT, REPLYX_ARTIFACTS_DIR=artifacts)


def test_critical_rolls_every_backend_and_every_worker_host_back(bad_fleet):
    before = {h: pm2_pids(h, "replyx-backend") for h in BACKENDS}
    proc = _run(bad_fleet, "-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}")
    assert proc.returncode == 0, proc.stdout[-5000:]
    for host, port in BACKENDS.items():
        assert tag(host) == "v1.1.0", host
        assert health(port) == 200, host
        after = pm2_pids(host, "replyx-backend")
        assert after and set(after).isdisjoint(before[host]), (host, before[host], after)
    for host in WORKERS:
        assert tag(host) == "v2.0.0", host
    assert revision() == "a1b2c3d4e5f6"
    report = sorted(bad_fleet.glob("incident-*.md"))[-1].read_text()
    assert "**Outcome:** SUCCESS" in report and "backend1" in report and "backend2" in report


# Last: it downgrades the schema, and the next bad_fleet would first have to deploy v1.1.0 again.
def test_high_in_batches_of_one_keeps_a_backend_serving(bad_fleet):
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def poll():
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            samples.append(tuple(health(p) for p in BACKENDS.values()))
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        proc = _run(bad_fleet, "-e", "level=high", "-e", "target=widget_version", "-e", "rollback_batch=1",
                    "-e", f"approvals={APPROVALS['high']}")
    finally:
        stop.set()
        poller.join(timeout=10)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert [tag(h) for h in BACKENDS] == ["v1.0.0", "v1.0.0"]
    assert revision() == "fb3228f45466"
    assert len(samples) > 20
    down = [s for s in samples if 200 not in s]
    assert not down, f"{len(down)} of {len(samples)} samples found no healthy backend: {down[:5]}"
