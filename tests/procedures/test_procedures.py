"""triage.yml, validate.yml, preflight.yml and backup.yml against the running lab (see conftest.py).
Tests run in file order: the bad-release test redeploys v1.1.0 after."""
from __future__ import annotations

import hashlib
import json
import shutil
import time

import pytest

from tests import labutil

from .conftest import BACKUP_DIR, BASEBACKUP_DIR, BASELINE_FILE, SUPER_DSN, mode, read_json

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]


def _newest(plab, pattern):
    files = sorted(plab.artifacts.glob(pattern))
    assert files, f"no {pattern} in {plab.artifacts}"
    return files[-1]


def test_triage_snapshot_has_the_first_five_minutes(plab):
    run = plab.run("triage.yml", check=True)
    path = _newest(plab, "triage-*.json")
    assert mode(path) == 0o600
    snap = read_json(path)
    assert set(snap) >= {"taken_at", "environment", "healthy", "backend", "database", "workers"}
    assert snap["healthy"] is True and snap["environment"] == "lab"
    assert snap["backend"]["http_status"] == 200 and snap["backend"]["health"]["status"] == "ok"
    assert snap["backend"]["release"] == "v1.1.0"
    db = snap["database"]
    assert db["select_1"] is True and db["alembic_revision"] == "a1b2c3d4e5f6"
    max_conn = int(labutil.psql("SHOW max_connections", dsn=SUPER_DSN))
    assert db["connections"]["max_connections"] == max_conn
    assert 1 <= db["connections"]["used"] < max_conn
    assert db["connections"]["percent"] == pytest.approx(100.0 * db["connections"]["used"] / max_conn, abs=0.1)
    assert db["connections_ok"] is True
    wk = snap["workers"]
    assert wk["ok"] is True and wk["active_workers"] == wk["expected_workers"] == 4 and wk["release"] == "v2.0.0"
    assert "migration  alembic      OK   a1b2c3d4e5f6" in run.stdout
    assert db["wal_archiving"]["archive_mode"] == "on" and db["wal_archiving"]["enabled"] is True
    assert "database   archiving    OK   archive_mode on, last archived " in run.stdout
    assert f"HEALTHY - snapshot {path}" in run.stdout


def test_triage_reports_an_unreachable_service_and_still_exits_0(plab):
    run = plab.run("triage.yml", "-e", "validation_workers_status_url=http://127.0.0.1:9/status", check=True)
    snap = read_json(_newest(plab, "triage-*.json"))
    assert snap["healthy"] is False
    assert snap["workers"]["ok"] is False and snap["workers"]["http_status"] == -1 and snap["workers"]["error"]
    assert snap["backend"]["ok"] is True and snap["database"]["select_1"] is True
    assert "UNHEALTHY" in run.stdout


def test_validate_passes_on_the_healthy_lab_and_records_the_baseline(plab):
    BASELINE_FILE.unlink(missing_ok=True)
    run = plab.run("validate.yml", "-e", "record_baseline=true", check=True)
    assert "Validation passed: 13/13 checks" in run.stdout
    for name in ("health", "login", "profile", "assistants", "dialogs", "database", "backend log",
                 "backend disk", "backend memory", "workers status", "bot manager (pm2)", "bot workers", "workers disk"):
        assert f"PASS | {name} |" in run.stdout
    baseline = read_json(BASELINE_FILE)
    assert set(baseline["p95_ms"]) >= {"health", "login", "profile", "assistants", "dialogs"}
    assert all(v >= baseline["floor_ms"] for v in baseline["p95_ms"].values())
    # a second validation is judged against that baseline too, and still passes
    plab.run("validate.yml", check=True)


def test_validate_fails_on_the_bad_release_naming_dialogs_and_the_threshold(plab):
    plab.run("deploy.yml", "-e", "release=bad", check=True)
    try:
        run = plab.run("validate.yml", "-e", "validation_deadline_s=0", "-e", "validation_samples=3")
        assert run.returncode == 2, run.stdout[-3000:]
        out = run.stdout
        assert "FAIL | dialogs | " in out
        msg = out[out.index("Validation failed: "):]
        assert msg.startswith("Validation failed: dialogs.")
        assert "dialogs: p95 " in msg and " ms > 2000 ms" in msg
        for name in ("health", "login", "database", "workers status"):
            assert f"PASS | {name} |" in out
    finally:
        plab.run("deploy.yml", "-e", "release=v1.1.0", check=True)
    plab.run("validate.yml", check=True)


def test_preflight_fails_without_a_backup_and_passes_after_backup_yml(plab):
    for directory in (BACKUP_DIR, BASEBACKUP_DIR):
        for entry in directory.iterdir() if directory.exists() else []:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    run = plab.run("preflight.yml")
    flat = " ".join(run.stdout.split())
    assert run.returncode == 2
    assert "FAIL | required | Full backup completed and verified | no verified logical backup" in run.stdout
    assert "FAIL | required | Point-in-time recovery possible (WAL archiving, base backup) | archive_mode on," in flat
    assert "no verified base backup in " in flat and "run playbooks/backup.yml -e backup_kind=physical" in flat
    assert ("Preflight failed: Full backup completed and verified; "
            "Point-in-time recovery possible (WAL archiving, base backup).") in flat
    assert "PASS | required | Rollback path known - previous good backend release" in run.stdout
    assert "database at a1b2c3d4e5f6, one step down is fb3228f45466" in flat

    plab.run("backup.yml", check=True)
    run = plab.run("preflight.yml")
    assert run.returncode == 2 and "Preflight failed: Point-in-time recovery possible" in " ".join(run.stdout.split())
    plab.run("backup.yml", "-e", "backup_kind=physical", check=True)
    run = plab.run("preflight.yml", check=True)
    assert "Preflight passed" in run.stdout
    assert ("PASS | required | Point-in-time recovery possible (WAL archiving, base backup) | archive_mode on"
            in " ".join(run.stdout.split()))
    assert "[WARNING]" not in run.stdout + run.stderr
    result = read_json(_newest(plab, "preflight-*.json"))
    assert result["passed"] is True and result["backup"]["verified"] is True
    assert result["backup"]["alembic_revision"] == "a1b2c3d4e5f6"
    assert result["base_backup"]["kind"] == "physical" and result["wal_archiving"]["enabled"] is True

    # a backup altered after the fact does not count; an older limit than its age does not either
    dump = BACKUP_DIR / result["backup"]["name"]
    with dump.open("ab") as fh:
        fh.write(b"tampered")
    run = plab.run("preflight.yml")
    assert run.returncode == 2 and "checksum mismatch" in run.stdout
    plab.run("backup.yml", check=True)
    assert plab.run("preflight.yml", "-e", "preflight_max_backup_age_h=0.0001").returncode == 2
    plab.run("preflight.yml", check=True)


def test_backup_yml_writes_a_verified_manifest_and_is_idempotent_by_label(plab):
    run = plab.run("backup.yml", "-e", "backup_label=proc-test", "-e", "backup_keep_last=5", check=True)
    dump = BACKUP_DIR / "chatai-proc-test.dump"
    manifest_path = BACKUP_DIR / "chatai-proc-test.dump.manifest.json"
    manifest = read_json(manifest_path)
    assert mode(dump) == 0o600 and mode(manifest_path) == 0o600
    assert manifest["verified"] is True and manifest["kind"] == "logical" and manifest["format"] == "custom"
    assert manifest["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert manifest["size_bytes"] == dump.stat().st_size
    assert manifest["alembic_revision"] == "a1b2c3d4e5f6" and manifest["label"] == "proc-test"
    users = int(labutil.psql("SELECT count(*) FROM users", dsn=SUPER_DSN))
    assert manifest["tables"]["public.users"] == users > 0
    assert f"manifest: {manifest_path}" in run.stdout and manifest["sha256"] in run.stdout
    again = plab.run("backup.yml", "-e", "backup_label=proc-test", check=True)
    assert labutil.recap(again.stdout)["localhost"]["changed"] == 0
    assert read_json(manifest_path)["sha256"] == manifest["sha256"]


def test_backup_yml_physical_base_backup(plab):
    plab.run("backup.yml", "-e", "backup_kind=physical", "-e", "backup_label=proc-base", check=True)
    from .conftest import BASEBACKUP_DIR
    manifest = read_json(BASEBACKUP_DIR / "base-proc-base.manifest.json")
    assert manifest["kind"] == "physical" and manifest["verified"] is True
    assert manifest["start_lsn"] and manifest["timeline"] >= 1
    # triage lists it (no checksum recomputed in the first five minutes) with its age
    run = plab.run("triage.yml", check=True)
    base = read_json(_newest(plab, "triage-*.json"))["database"]["newest_base_backup"]
    newest = max((read_json(p) for p in BASEBACKUP_DIR.glob("*.manifest.json")), key=lambda m: m["created"])
    assert base["name"] == newest["name"] and base["verified"] is False and 0 <= base["age_h"] < 1
    assert f"database   base backup  OK   newest {newest['name']}, " in run.stdout


def _archiver() -> dict:
    row = labutil.psql("SELECT failed_count, coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'), false) "
                       "FROM pg_stat_archiver", dsn=SUPER_DSN).split("|")
    return {"failed_count": int(row[0]), "failing": row[1] in ("t", "True", "true")}


def _switch_wal() -> None:
    labutil.psql("CREATE TABLE IF NOT EXISTS replyx_archiver_probe (x int)", dsn=SUPER_DSN)
    labutil.psql("INSERT INTO replyx_archiver_probe VALUES (1)", dsn=SUPER_DSN)
    labutil.psql("SELECT pg_switch_wal()", dsn=SUPER_DSN)


def test_preflight_fails_naming_a_broken_archiver_and_passes_once_it_is_fixed(plab):
    """WAL archiving can fail while the database runs happily: preflight (and triage) say so before the
    incident needs a point-in-time recovery, and pass again once the archiver has caught up."""
    plab.run("preflight.yml", check=True)
    failed_before = _archiver()["failed_count"]
    labutil.psql("ALTER SYSTEM SET archive_command = 'false'", dsn=SUPER_DSN)
    try:
        labutil.psql("SELECT pg_reload_conf()", dsn=SUPER_DSN)
        _switch_wal()
        deadline = time.monotonic() + 30
        while _archiver()["failed_count"] == failed_before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _archiver()["failing"], "the archiver did not fail"
        run = plab.run("preflight.yml")
        flat = " ".join(run.stdout.split())
        assert run.returncode == 2
        assert "FAIL | required | Point-in-time recovery possible (WAL archiving, base backup) | archive_mode on," in flat
        assert "FAILING since " in flat and "after fixing archiving" in flat
        # pg_status names the problem (wal_archiving.problems): the segment that failed and the last success
        assert "archiving is failing: archive_command failed on " in flat and "the last success was " in flat
        triage = plab.run("triage.yml", check=True)
        assert "FAILING since" in " ".join(triage.stdout.split())
        assert "archiving is failing: archive_command failed on " in " ".join(triage.stdout.split())
        # a base backup is refused while archiving is broken, naming why
        refused = plab.run("backup.yml", "-e", "backup_kind=physical", "-e", "backup_label=proc-refused")
        refused_flat = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode != 0
        assert "Failed to back up (physical): WAL archiving is broken" in refused_flat
        assert "archiving is failing: archive_command failed on " in refused_flat
    finally:
        labutil.psql("ALTER SYSTEM RESET archive_command", dsn=SUPER_DSN)
        labutil.psql("SELECT pg_reload_conf()", dsn=SUPER_DSN)
    deadline = time.monotonic() + 90
    while _archiver()["failing"] and time.monotonic() < deadline:
        _switch_wal()  # wakes the archiver, which retries the failed segment first
        time.sleep(1)
    labutil.psql("DROP TABLE IF EXISTS replyx_archiver_probe", dsn=SUPER_DSN)
    assert not _archiver()["failing"], "archiving did not recover"
    run = plab.run("preflight.yml", check=True)
    assert "Preflight passed" in run.stdout


def test_bad_backup_kind_is_refused(plab):
    run = plab.run("backup.yml", "-e", "backup_kind=incremental")
    assert run.returncode == 2 and "backup_kind must be logical or physical" in run.stdout


def test_no_secret_in_any_artifact(plab):
    from .conftest import SECRETS
    files = plab.artifact_files()
    assert any(p.name.startswith("triage-") for p in files) and any(p.name.startswith("preflight-") for p in files)
    for path in files:
        text = path.read_text()
        assert not [s for s in SECRETS if s in text], path
