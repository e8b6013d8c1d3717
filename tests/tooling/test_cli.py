"""The ansible-runner CLI and the Fabric quick commands against the running lab."""
from __future__ import annotations

import subprocess

import pytest

from tests import labutil

pytestmark = pytest.mark.lab


def _run(*argv, **env):
    return subprocess.run([str(labutil.VENV_BIN / argv[0]), *argv[1:]], cwd=labutil.ROOT, env=labutil.env(**env),
                          capture_output=True, text=True, timeout=600)


def test_cli_plans_a_rollback_through_ansible_runner_and_changes_nothing(lab, tmp_path):
    head = labutil.psql("select version_num from alembic_version")
    proc = _run("replyx-rollback", "plan", "high", "--target", "widget_version",
                "--approval", "lead:team_lead:INC-1", "--approval", "dba:executive:INC-1",
                REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "rollback.yml (check mode)" in proc.stdout
    assert "  - Check the request and compute the plan (changes nothing)" in proc.stdout
    assert "result: successful (rc=0)" in proc.stdout
    # the plan itself, as ansible-playbook --check prints it: the steps and what the downgrade drops
    assert "CHECK MODE: nothing will change" in proc.stdout
    assert "Alembic: a1b2c3d4e5f6 -> fb3228f45466" in proc.stdout and "DROPS DATA" in proc.stdout
    assert "Backup: tables assistants" in proc.stdout
    assert "Steps:" in proc.stdout and "  1. " in proc.stdout
    assert labutil.psql("select version_num from alembic_version") == head
    for secret in labutil.SECRETS:
        assert secret not in proc.stdout + proc.stderr


def test_cli_reports_a_refused_rollback(lab, tmp_path):
    proc = _run("replyx-rollback", "run", "critical", REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode != 0
    assert "result: failed" in proc.stdout
    assert "needs approval by a executive" in proc.stdout


def test_cli_rejects_an_unknown_level_with_the_choices():
    proc = _run("replyx-rollback", "run", "urgent")
    assert proc.returncode == 2
    assert "invalid choice: 'urgent'" in proc.stderr and "critical" in proc.stderr and "auto" in proc.stderr


def test_quick_health_and_db_check_on_the_lab(lab):
    health = _run("replyx-quick", "health")
    assert health.returncode == 0 and '"status":"ok"' in health.stdout.replace(" ", "")
    db = _run("replyx-quick", "db-check")
    assert db.returncode == 0, db.stderr
    assert '"db": "chatai"' in db.stdout and "PostgreSQL 18" in db.stdout
    for secret in labutil.SECRETS:
        assert secret not in db.stdout + db.stderr
    logs = _run("replyx-quick", "logs", "-n", "3")
    assert logs.returncode == 0 and len(logs.stdout.strip().splitlines()) == 3


def test_quick_health_fails_clearly_when_the_backend_is_unreachable():
    proc = _run("replyx-quick", "health", REPLYX_BACKEND_PORT=1)
    assert proc.returncode != 0
    assert "Failed to connect to 127.0.0.1 port 1" in proc.stdout + proc.stderr


def test_quick_names_the_host_that_is_down_and_the_others_still_answer(lab):
    proc = _run("replyx-quick", "--host", "local", "--host", "nobody@127.0.0.1:1", "health")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert '"status":"ok"' in proc.stdout.replace(" ", "")
    assert "Failed to run health on nobody@127.0.0.1:1" in proc.stderr
    assert "health: 1 of 2 host(s) passed; failed: nobody@127.0.0.1:1" in proc.stdout
    assert _run("replyx-quick", "--version").stdout.startswith("replyx-quick ")


def test_fab_health_exits_non_zero_when_the_check_fails():
    proc = _run("fab", "health", REPLYX_BACKEND_PORT=1)
    assert proc.returncode != 0
    assert "Failed to connect to 127.0.0.1 port 1" in proc.stdout + proc.stderr


def test_db_check_reads_the_env_file_as_data_never_as_shell_code(lab, tmp_path):
    marker = tmp_path / "executed"
    env_file = tmp_path / ".env"
    env_file.write_text(f"# app settings\nexport DATABASE_URL='{labutil.APP_DSN}'\nX=$(touch {marker})\n`touch {marker}`\n")
    proc = _run("python", "-m", "replyx_rollback.quick", "_psql", "--env-file", str(env_file), "SELECT 1 AS ok")
    assert proc.returncode == 0, proc.stderr
    assert '"ok": "1"' in proc.stdout
    assert not marker.exists()
    for secret in labutil.SECRETS:
        assert secret not in proc.stdout + proc.stderr
