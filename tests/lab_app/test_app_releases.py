"""The release trees (base + overlay - remove) running for real: stable v1.0.0 and the bad v1.2.0."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.lab_app.conftest import PYTHON, ROOT, AppServer, alembic, assemble_release, http, run_app_cmd

pytestmark = [pytest.mark.pg, pytest.mark.slow]


@pytest.fixture(scope="module")
def seeded_db(pg):
    db = pg.database()
    alembic(db.url, "upgrade", "head")
    run_app_cmd([str(PYTHON), "scripts/seed.py"], DATABASE_URL=db.url)
    return db


def test_bad_release_v120_is_slow_but_healthy(seeded_db, tmp_path):
    tree = tmp_path / "v1.2.0"
    assemble_release("v1.2.0", tree)
    srv = AppServer(tree, seeded_db.url, tmp_path / "run").start()
    try:
        health = http("GET", srv.base + "/health")
        assert health.status == 200 and health.json()["release"] == "v1.2.0"
        auth = srv.login()
        started = time.monotonic()
        resp = http("GET", srv.base + "/api/dialogs", headers=auth)
        elapsed = time.monotonic() - started
        assert resp.status == 200 and resp.json()["count"] == 50
        assert elapsed > 2.5, elapsed
        assert http("GET", srv.base + "/health").status == 200
        print(f"v1.2.0 GET /api/dialogs took {elapsed:.2f}s")
    finally:
        srv.stop()


def test_stable_release_v100_on_head_and_on_its_own_schema(seeded_db, tmp_path):
    tree = tmp_path / "v1.0.0"
    assemble_release("v1.0.0", tree)
    # code rollback only (level critical): v1.0.0 against the a1b2c3d4e5f6 schema
    srv = AppServer(tree, seeded_db.url, tmp_path / "run1").start()
    try:
        body = http("GET", srv.base + "/health").json()
        assert body["release"] == "v1.0.0" and body["alembic_revision"] == "a1b2c3d4e5f6"
        auth = srv.login()
        items = http("GET", srv.base + "/api/assistants", headers=auth).json()
        assert items and all("widget_version" not in a for a in items)
        assert http("POST", srv.base + "/api/assistants", headers=auth, json_body={"name": "Stable"}).status == 201
        started = time.monotonic()
        assert http("GET", srv.base + "/api/dialogs", headers=auth).status == 200
        assert time.monotonic() - started < 2.0
    finally:
        srv.stop()
    # migration + code rollback (level high). Order matters: the v1.0.0 tree has no a1b2c3d4e5f6 script,
    # so its alembic cannot even read the current revision; the downgrade runs with the deployed (newer)
    # tree first, then the code goes back.
    stale = alembic(seeded_db.url, "downgrade", "fb3228f45466", app_dir=tree, check=False)
    assert stale.returncode != 0 and "Can't locate revision identified by 'a1b2c3d4e5f6'" in stale.stdout + stale.stderr
    proc = alembic(seeded_db.url, "downgrade", "fb3228f45466")
    assert "a1b2c3d4e5f6 -> fb3228f45466" in proc.stderr
    srv = AppServer(tree, seeded_db.url, tmp_path / "run2").start()
    try:
        assert http("GET", srv.base + "/health").json()["alembic_revision"] == "fb3228f45466"
        auth = srv.login()
        assert http("GET", srv.base + "/api/assistants", headers=auth).status == 200
        assert http("GET", srv.base + "/api/users/profile", headers=auth).status == 200
    finally:
        srv.stop()
    assert alembic(seeded_db.url, "current", app_dir=tree).stdout.split()[0] == "fb3228f45466"
    assert alembic(seeded_db.url, "upgrade", "head").returncode == 0


def test_release_repo_builder_accepts_the_manifest(tmp_path):
    bare = tmp_path / "backend.git"
    proc = subprocess.run([str(PYTHON), "lab/scripts/build_release_repo.py", "--app-dir", "lab/app/backend",
                           "--repo", str(bare)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["tag"], r["good"], r["alembic_head"]) for r in result["releases"]] == [
        ("v1.0.0", True, "fb3228f45466"), ("v1.1.0", True, "a1b2c3d4e5f6"), ("v1.2.0", False, "a1b2c3d4e5f6")]
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", "v1.0.0"], cwd=bare, capture_output=True,
                           text=True, check=True).stdout.split()
    assert "alembic/versions/a1b2c3d4e5f6_add_widget_version_to_assistants.py" not in files
    assert "alembic/versions/fb3228f45466_assistant_ai_model_and_dialog_handoff.py" in files
    assert ".env.example" in files and ".gitignore" in files
