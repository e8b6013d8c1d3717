"""`make lab-up` on a fresh clone gives the stack the drills need: each fact checked on the running lab."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests import labutil

pytestmark = pytest.mark.lab


def test_backend_health_answers_200(lab):
    status, body = labutil.http_json(labutil.BACKEND_URL + "/health")
    assert status == 200, body
    assert body["database"] == "ok"


def test_workers_report_every_worker_active(lab):
    status, body = labutil.http_json(labutil.WORKERS_URL + "/status")
    assert status == 200, body
    assert body["expected_workers"] == 4
    assert body["active_workers"] == body["expected_workers"]


def test_alembic_head_is_the_widget_version(lab):
    assert labutil.alembic_current() == "a1b2c3d4e5f6"
    assert labutil.psql("select version_num from alembic_version") == "a1b2c3d4e5f6"


def test_pgvector_is_installed(lab):
    assert labutil.psql("select extname from pg_extension where extname = 'vector'") == "vector"


def test_cosine_index_exists_and_the_planner_uses_it(lab):
    assert labutil.psql("select indexname from pg_indexes where indexname = 'knowledge_embeddings_embedding_cosine_idx'") \
        == "knowledge_embeddings_embedding_cosine_idx"
    probe = labutil.psql("select embedding::text from knowledge_embeddings limit 1")
    plan = labutil.psql(f"explain select id from knowledge_embeddings order by embedding <=> '{probe}' limit 5")
    assert "knowledge_embeddings_embedding_cosine_idx" in plan, plan


def test_seed_data_is_there(lab):
    counts = {t: int(labutil.psql(f"select count(*) from {t}")) for t in
              ("users", "assistants", "dialogs", "dialog_messages", "knowledge_embeddings",
               "balance_transactions", "ai_token_usage")}
    assert all(n > 0 for n in counts.values()), counts
    assert labutil.psql("select count(*) from users where email = 'test@example.com'") == "1"


def test_wal_segments_arrive_in_the_archive(lab):
    archive = labutil.LAB_ROOT / "postgres" / "wal_archive"
    before = {p.name for p in archive.iterdir()}
    segment = labutil.psql("select pg_walfile_name(pg_current_wal_lsn())")
    labutil.psql("create table if not exists lab_wal_probe(x int); insert into lab_wal_probe values (1); drop table lab_wal_probe")
    labutil.psql("select pg_switch_wal()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and segment not in {p.name for p in archive.iterdir()}:
        time.sleep(0.5)
    after = {p.name for p in archive.iterdir()}
    assert segment in after, (segment, sorted(after)[-5:])
    assert len(after) > len(before) or segment in before


def test_release_history_records_the_deploys(lab):
    history = labutil.release_history("backend")
    tags = [h["tag"] for h in history if h["result"] == "success"]
    assert "v1.0.0" in tags and "v1.1.0" in tags
    last = history[-1]
    assert last["commit"] and len(last["commit"]) == 40
    assert last["alembic_revision"] == "a1b2c3d4e5f6"
    assert labutil.release_history("workers")[-1]["tag"] == "v2.0.0"


def test_second_lab_run_changes_nothing_and_shows_no_secret(lab):
    proc = labutil.playbook("lab.yml", "-v", check=True)
    counters = labutil.recap(proc.stdout)
    assert set(counters) == {"postgres", "backend", "workers"}
    assert {h: c["changed"] for h, c in counters.items()} == {"postgres": 0, "backend": 0, "workers": 0}, proc.stdout[-4000:]
    for secret in labutil.SECRETS:
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.parametrize("app, current, backup", [
    ("backend", labutil.APP_DIR / ".env", labutil.APP_DIR / ".env.backup"),
    ("workers", labutil.WORKERS_APP_DIR / "config" / "production.json",
     labutil.WORKERS_APP_DIR / "config" / "production.json.backup"),
])
def test_a_deploy_keeps_the_configuration_it_found_even_when_the_new_one_is_the_same(lab, app, current, backup):
    """The configuration rollback's source exists after any deploy that found a configuration: a deploy
    writing the same content keeps a copy when there is none (one that changes it keeps the one it replaced)."""
    saved = backup.read_bytes() if backup.exists() else None
    backup.unlink(missing_ok=True)
    try:
        app_dir = labutil.APP_DIR if app == "backend" else labutil.WORKERS_APP_DIR
        release = subprocess.run(["git", "-C", str(app_dir), "describe", "--tags", "--exact-match", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        labutil.playbook("deploy.yml", "-e", f"app={app}", "-e", f"release={release}", check=True)
        assert backup.exists(), f"{backup} missing after a deploy"
        assert backup.read_bytes() == current.read_bytes()
    finally:
        if saved is not None:
            backup.write_bytes(saved)


def test_a_diff_run_never_prints_the_env(lab):
    """`--diff` of a deploy that would change the .env says so without printing its content (the
    database password and SECRET_KEY)."""
    release = subprocess.run(["git", "-C", str(labutil.APP_DIR), "describe", "--tags", "--exact-match", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    before = (labutil.APP_DIR / ".env").read_bytes()
    proc = labutil.playbook("deploy.yml", "--check", "--diff", "-e", "app=backend", "-e", f"release={release}",
                            "-e", "backend_secret_key=Rotated-Secret-4711", check=True)
    out = proc.stdout + proc.stderr
    assert "Render .env" in out
    for secret in (*labutil.SECRETS, "Rotated-Secret-4711"):
        assert secret not in out
    assert (labutil.APP_DIR / ".env").read_bytes() == before
