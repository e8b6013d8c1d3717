"""Each level and component end to end against the lab: the lab ends in the expected state, the
data is intact, the incident report says what happened, and a second run changes nothing."""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests import labutil
from tests.rollback.conftest import (APPROVALS, LOCK_FILE, backups, deploy, fingerprints, lab_state, reports,
                                     rollback)

pytestmark = pytest.mark.lab


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc


def _report(artifacts) -> str:
    """The newest incident report, checked to be complete: every time labelled, no empty or unknown field."""
    found = reports(artifacts)
    assert found, "no incident report written"
    report = found[-1].read_text()
    summary = report.split("## Timeline")[0]
    revisions = report.split("## Revisions and releases")[1].split("## ")[0]
    assert re.search(r"\*\*Times:\*\* command started \S+; lock taken \S+; service restored \S+ \(.+\); run ended \S+",
                     summary), summary
    assert "| - |" not in revisions and not revisions.rstrip().endswith("| - |"), revisions
    unknown = [line for line in report.splitlines() if re.search(r"(^|[\s(:|])\?($|[\s),;|])", line)]
    assert not unknown, unknown
    return report


def _no_secrets(proc, artifacts):
    texts = [proc.stdout, proc.stderr] + [p.read_text() for p in artifacts.rglob("*") if p.is_file()]
    for secret in labutil.SECRETS:
        assert not any(secret in t for t in texts), secret


def _login() -> str:
    req = urllib.request.Request(labutil.BACKEND_URL + "/api/login", method="POST",
                                 data=json.dumps({"email": "test@example.com", "password": "testpass"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


def _get(path: str, token: str | None = None) -> int:
    req = urllib.request.Request(labutil.BACKEND_URL + path,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # refused while the process restarts: not an answer, not a 5xx


def test_high_migration_rollback_the_drill_under_traffic(baseline, artifacts):
    """The drill, with a logged-in client calling /api/assistants and /health every 0.1 s through the
    whole run: the high level switches the code first (the downgrade only drops what the bad release
    added) and downgrades after, so no request fails with a 5xx because of the rollback."""
    deploy("bad")
    data_before = fingerprints()
    backups_before = backups()
    token = _login()
    answers: list[tuple[float, str, int]] = []
    stop = threading.Event()

    def client():
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            for path, tok in (("/api/assistants", token), ("/health", None)):
                answers.append((time.monotonic(), path, _get(path, tok)))
            time.sleep(0.1)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    args = ("-e", "level=high", "-e", "target=widget_version", "-e", f"approvals={APPROVALS['high']}")
    try:
        proc = _ok(rollback(*args, "-v", artifacts=artifacts))
    finally:
        stop.set()
        thread.join(timeout=10)
    errors = [a for a in answers if a[2] >= 500]
    assert len(answers) > 20
    assert not errors, f"{len(errors)} answers were 5xx: {errors[:5]}"
    state = lab_state()
    assert state["backend"] == "v1.0.0"
    assert state["revision"] == "fb3228f45466"
    assert state["widget_column"] == "0"
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert fingerprints() == data_before
    new_backups = backups() - backups_before
    assert len(new_backups) == 1 and "pre-rollback" in next(iter(new_backups))
    report = _report(artifacts)
    for text in ("**Severity:** HIGH", "**Outcome:** SUCCESS", "a1b2c3d4e5f6 -> fb3228f45466",
                 "Backend code v1.2.0 -> v1.0.0", "lead (team_lead), ticket INC-2", "dba (executive)",
                 "assistants.widget_version", "Verified backup"):
        assert text in report, text
    assert not LOCK_FILE.exists()
    _no_secrets(proc, artifacts)
    # warnings mean something is wrong: a successful drill has none
    assert "[WARNING]" not in proc.stdout + proc.stderr, [
        line for line in (proc.stdout + proc.stderr).splitlines() if "[WARNING]" in line]
    history = labutil.release_history("backend")
    assert history[-1]["tag"] == "v1.0.0" and history[-1]["result"] == "rollback"
    assert history[-1]["rolled_back_from"] == "v1.2.0"

    again = _ok(rollback(*args, artifacts=artifacts))
    assert lab_state() == state
    assert backups() - backups_before == new_backups
    assert "fb3228f45466 -> fb3228f45466 (0 step(s))" in again.stdout
    assert "already there, no change" in _report(artifacts)


def test_critical_code_rollback_to_the_last_known_good_release(baseline, artifacts):
    deploy("bad")
    data_before = fingerprints()
    args = ("-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}")
    _ok(rollback(*args, artifacts=artifacts))
    state = lab_state()
    assert (state["backend"], state["workers"], state["revision"]) == ("v1.1.0", "v2.0.0", "a1b2c3d4e5f6")
    assert fingerprints() == data_before
    report = _report(artifacts)
    assert "**Severity:** CRITICAL" in report and "Backend code v1.2.0 -> v1.1.0" in report
    _ok(rollback(*args, artifacts=artifacts))
    assert lab_state() == state


def test_medium_backend_and_workers_code(baseline, artifacts):
    # The bad workers release crash-loops: its deploy fails the /status wait (and records that),
    # which is the incident this level rolls back. Selective: the backend is not touched.
    labutil.playbook("deploy.yml", "-e", "app=workers", "-e", "release=bad", "-e", "workers_health_timeout=10")
    assert lab_state()["workers"] == "v2.1.0"
    assert labutil.release_history("workers")[-1]["result"] == "failed"
    backend_before = labutil.release_history("backend")
    _ok(rollback("-e", "level=medium", "-e", "component=workers", "-e", f"approvals={APPROVALS['medium']}",
                 artifacts=artifacts))
    assert lab_state()["workers"] == "v2.0.0"
    assert labutil.release_history("backend") == backend_before
    status, body = labutil.http_json(labutil.WORKERS_URL + "/status")
    assert status == 200 and body["active_workers"] == body["expected_workers"] == 4
    assert "Workers code v2.1.0 -> v2.0.0" in reports(artifacts)[0].read_text()

    deploy("bad")
    _ok(rollback("-e", "level=medium", "-e", "component=backend", "-e", f"approvals={APPROVALS['medium']}",
                 artifacts=artifacts))
    assert lab_state()["backend"] == "v1.1.0"
    assert lab_state()["workers"] == "v2.0.0"


def test_medium_config_restores_env_backup_and_the_app_loads_it(baseline, artifacts):
    env = labutil.APP_DIR / ".env"
    good = env.read_bytes()
    deploy("v1.1.0", "backend", "-e", "backend_secret_key=RotatedKey-000")
    assert env.read_bytes() != good and (labutil.APP_DIR / ".env.backup").read_bytes() == good
    args = ("-e", "level=medium", "-e", "component=config", "-e", f"approvals={APPROVALS['medium']}")
    _ok(rollback(*args, artifacts=artifacts))
    assert env.read_bytes() == good
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert "the app loads DATABASE_URL for 127.0.0.1" in _report(artifacts)
    _ok(rollback(*args, artifacts=artifacts))
    assert env.read_bytes() == good
    assert "already the backup configuration, no change" in _report(artifacts)


def test_medium_dependencies_rebuilds_the_virtualenv(baseline, artifacts):
    # The incident of the plan's "Dependencies Rollback": requirements.txt was updated in place and
    # installed (the code did not change).
    py = str(labutil.APP_DIR / "venv" / "bin" / "python")
    reqs = labutil.APP_DIR / "requirements.txt"
    reqs.write_text(reqs.read_text() + "humanize>=4.9\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(reqs)], check=True)
    assert subprocess.run([py, "-c", "import humanize"]).returncode == 0
    _ok(rollback("-e", "level=medium", "-e", "component=dependencies", "-e", "rebuild_venv=true",
                 "-e", f"approvals={APPROVALS['medium']}", artifacts=artifacts))
    assert subprocess.run([py, "-c", "import humanize"], capture_output=True).returncode != 0
    v110 = subprocess.run(["git", "-C", str(labutil.APP_DIR), "show", "v1.1.0:requirements.txt"],
                          capture_output=True, text=True, check=True).stdout
    assert reqs.read_text().strip() == v110.strip()
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert "virtualenv rebuilt" in _report(artifacts)


def test_medium_worker_config_restores_the_backup_with_a_clean_restart(baseline, artifacts):
    deploy("v2.0.0", "workers", "-e", "workers_count=2")
    assert labutil.http_json(labutil.WORKERS_URL + "/status")[1]["expected_workers"] == 2
    _ok(rollback("-e", "level=medium", "-e", "component=worker_config", "-e", f"approvals={APPROVALS['medium']}",
                 artifacts=artifacts))
    assert lab_state()["worker_config"]["workers"] == 4
    status, body = labutil.http_json(labutil.WORKERS_URL + "/status")
    assert status == 200 and body["active_workers"] == 4


def test_medium_indexes_manual_fallback(baseline, artifacts):
    names = ("knowledge_embeddings_embedding_cosine_idx", "idx_ai_token_usage_user_created",
             "ix_knowledge_embeddings_user_assistant", "ix_dialog_messages_dialog_id",
             "ix_balance_transactions_user_created")
    quoted = ",".join(f"'{n}'" for n in names)
    defs = labutil.psql(f"select indexdef from pg_indexes where indexname in ({quoted})").splitlines()
    assert len(defs) == 5
    backups_before = backups()
    try:
        _ok(rollback("-e", "level=medium", "-e", "component=indexes", "-e", f"approvals={APPROVALS['medium']}",
                     artifacts=artifacts))
        assert labutil.psql(f"select count(*) from pg_indexes where indexname in ({quoted})") == "0"
        assert labutil.psql("select extname from pg_extension where extname = 'vector'") == "vector"
        assert len(backups() - backups_before) == 1
        assert "Manual index fallback" in _report(artifacts)
    finally:
        for ddl in defs:
            labutil.psql(ddl.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))


def test_low_writes_the_plan_then_runs_it_in_the_window(baseline, artifacts):
    deploy("bad")
    before = lab_state()
    proc = _ok(rollback("-e", "level=low", "-e", "target=widget_version", artifacts=artifacts))
    assert lab_state() == before
    plans = list((artifacts / "plans").glob("plan-*.txt"))
    assert len(plans) == 1
    text = plans[0].read_text()
    assert "downgrade on backend: a1b2c3d4e5f6 -> fb3228f45466" in text and "SQL preview:" in text
    assert "ALTER TABLE assistants DROP COLUMN widget_version" in text
    assert "Plan written" in proc.stdout
    _ok(rollback("-e", "level=low", "-e", "component=backend", "-e", "window=now",
                 "-e", f"approvals={APPROVALS['low']}", artifacts=artifacts))
    assert lab_state()["backend"] == "v1.1.0"


def test_auto_measures_and_picks_the_level_by_the_matrix(baseline, artifacts):
    labutil.playbook("validate.yml", "-e", "record_baseline=true", check=True, REPLYX_ARTIFACTS_DIR=artifacts)
    deploy("bad")
    proc = _ok(rollback("-e", "level=auto", "-e", f"approvals={APPROVALS['high']}", artifacts=artifacts))
    assert "chosen by level=auto: p95_ratio_to_baseline" in proc.stdout
    assert lab_state()["backend"] == "v1.1.0"
    report = _report(artifacts)
    assert "**Severity:** HIGH (chosen by level=auto" in report
