"""Data recovery through the rollback machinery: restore.yml (full, tables) and pitr.yml on the lab.
The data comes back exactly; the forensic copies stay; the report says what cannot come back."""
from __future__ import annotations

import json
import time

import pytest

from tests import labutil
from tests.rollback.conftest import LOCK_FILE, fingerprints, lab_state, reports

pytestmark = pytest.mark.lab
TWO = "dba:executive:INC-9,lead:team_lead:INC-9"


def _play(name, *args, artifacts):
    proc = labutil.playbook(name, *args, REPLYX_ARTIFACTS_DIR=artifacts, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc


def _manifest(label: str) -> str:
    found = sorted((labutil.LAB_ROOT / "postgres" / "backups").glob(f"*{label}*.manifest.json"))
    assert found, label
    return str(found[-1])


def test_full_and_table_restore_bring_every_row_back(baseline, artifacts):
    label = f"restore-test-{int(time.time())}"
    _play("backup.yml", "-e", f"backup_label={label}", artifacts=artifacts)
    manifest = _manifest(label)
    good = fingerprints()
    labutil.psql("delete from dialog_messages where id % 3 = 0")
    labutil.psql("drop table ai_token_usage")
    assert labutil.psql("select count(*) from pg_tables where tablename = 'ai_token_usage'") == "0"
    _play("restore.yml", "-e", f"recovery_backup={manifest}", "-e", f"approvals={TWO}", artifacts=artifacts)
    assert fingerprints() == good
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    report = reports(artifacts)[-1].read_text()
    assert "Database backup restoration (logical)" in report and "**Outcome:** SUCCESS" in report
    # restore_method auto (the default) given a dump: logical, and the report says why
    assert "(logical: recovery_backup is a logical dump (pg_dump" in _flat(report)
    assert "forensic backup" in report
    assert not LOCK_FILE.exists()

    labutil.psql("delete from balance_transactions where id % 2 = 0")
    _play("restore.yml", "-e", f"recovery_backup={manifest}", "-e", "restore_mode=tables",
          "-e", "restore_tables=balance_transactions", "-e", f"approvals={TWO}", artifacts=artifacts)
    assert fingerprints() == good


def test_restore_refuses_a_backup_whose_checksum_does_not_match(baseline, artifacts, tmp_path):
    label = f"tamper-test-{int(time.time())}"
    _play("backup.yml", "-e", f"backup_label={label}", artifacts=artifacts)
    manifest = json.loads(open(_manifest(label)).read())
    forged = tmp_path / "forged.manifest.json"
    forged.write_text(json.dumps(dict(manifest, sha256="0" * 64)))
    before = fingerprints()
    proc = labutil.playbook("restore.yml", "-e", f"recovery_backup={forged}", "-e", f"approvals={TWO}",
                            REPLYX_ARTIFACTS_DIR=artifacts)
    assert proc.returncode != 0
    assert "checksum" in " ".join(proc.stdout.split()).lower()
    assert fingerprints() == before and not LOCK_FILE.exists()


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def test_pitr_recovers_to_the_recorded_time(baseline, artifacts):
    _play("backup.yml", "-e", "backup_kind=physical", artifacts=artifacts)
    labutil.psql("create table pitr_probe(id int primary key)")
    labutil.psql("insert into pitr_probe select generate_series(1, 100)")
    time.sleep(1.5)
    target = labutil.psql("select now()")
    time.sleep(1.5)
    labutil.psql("insert into pitr_probe select generate_series(101, 200)")
    labutil.psql("drop table ai_token_usage")
    labutil.psql("select pg_switch_wal()")
    time.sleep(3)
    try:
        # --check finds the same tools as the real run (pg_waldump in the server's bin dir) and changes nothing
        forensic_before = sorted((labutil.LAB_ROOT / "postgres" / "forensic").glob("data-*"))
        check = labutil.playbook("pitr.yml", "-e", f"recovery_target_time='{target}'", "-e", f"approvals={TWO}", "--check",
                                 REPLYX_ARTIFACTS_DIR=artifacts, timeout=900)
        assert check.returncode == 0, check.stdout[-4000:]
        assert "CHECK MODE: nothing will change" in check.stdout and "Steps:" in check.stdout
        assert labutil.psql("select count(*) from pitr_probe") == "200"
        assert labutil.psql("select to_regclass('ai_token_usage') is null") == "True"
        assert sorted((labutil.LAB_ROOT / "postgres" / "forensic").glob("data-*")) == forensic_before
        assert not LOCK_FILE.exists()

        _play("pitr.yml", "-e", f"recovery_target_time='{target}'", "-e", f"approvals={TWO}", artifacts=artifacts)
        assert labutil.psql("select count(*), max(id) from pitr_probe") == "100|100"
        assert int(labutil.psql("select count(*) from ai_token_usage")) > 0
        assert labutil.psql("select pg_is_in_recovery()") == "False"
        forensic = list((labutil.LAB_ROOT / "postgres" / "forensic").glob("data-*"))
        assert forensic, "the old data directory must be kept"
        timeline = int(labutil.psql("select timeline_id from pg_control_checkpoint()"))
        assert timeline >= 2
        report = reports(artifacts)[-1].read_text()
        assert "Point-in-time recovery" in report and f"timeline {timeline}" in report
        assert lab_state()["revision"] == "a1b2c3d4e5f6"

        # PITR coverage is back at once (no lab.yml in between): archiving on, a WAL switch reaches the
        # archive, a verified base backup on the new timeline, and the report says so
        assert labutil.psql("show archive_mode") == "on"
        wal = labutil.psql("select pg_walfile_name(pg_switch_wal())")
        archive = labutil.LAB_ROOT / "postgres" / "wal_archive"
        assert _wait(lambda: (archive / wal).exists()), f"{wal} never reached the archive"
        bases = sorted((json.loads(p.read_text()) for p in (labutil.LAB_ROOT / "postgres" / "basebackups").glob("*.manifest.json")),
                       key=lambda m: m["created"])
        assert (bases[-1]["label"] or "").startswith("after-pitr-") and bases[-1]["verified"], bases[-1]
        assert bases[-1]["timeline"] == timeline
        assert "PITR coverage restored" in " ".join(report.split())

        # a second PITR, to a time after the first one, succeeds on the new timeline
        labutil.psql("insert into pitr_probe select generate_series(101, 150)")
        time.sleep(1.5)
        target2 = labutil.psql("select now()")
        time.sleep(1.5)
        labutil.psql("insert into pitr_probe select generate_series(151, 300)")
        labutil.psql("select pg_switch_wal()")
        time.sleep(3)
        _play("pitr.yml", "-e", f"recovery_target_time='{target2}'", "-e", f"approvals={TWO}", artifacts=artifacts)
        assert labutil.psql("select count(*), max(id) from pitr_probe") == "150|150"
        assert int(labutil.psql("select timeline_id from pg_control_checkpoint()")) == timeline + 1
        assert labutil.psql("show archive_mode") == "on"
    except BaseException:
        # put the lab's PostgreSQL back in shape for the next tests, whatever failed
        labutil.playbook("lab.yml", "--limit", "postgres", timeout=900)
        raise
    finally:
        labutil.psql("drop table if exists pitr_probe")


def _newest_base_manifest() -> str:
    found = sorted((labutil.LAB_ROOT / "postgres" / "basebackups").glob("*.manifest.json"),
                   key=lambda p: json.loads(p.read_text())["created"])
    assert found, "no physical backup"
    return str(found[-1])


def _damage() -> None:
    labutil.psql("delete from dialog_messages where id % 3 = 0")
    labutil.psql("delete from balance_transactions where id % 2 = 0")
    labutil.psql("drop table ai_token_usage")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_restore_chooses_physical_or_logical_and_brings_every_row_back(baseline, artifacts):
    """restore.yml on one lab session: auto choosing physical (a verified base backup whose WAL is archived),
    logical forced, and physical forced on a dump refused (auto choosing logical for a dump: the test above)."""
    label = f"method-test-{int(time.time())}"
    _play("backup.yml", "-e", f"backup_label={label}", artifacts=artifacts)
    _play("backup.yml", "-e", "backup_kind=physical", artifacts=artifacts)
    dump, base = _manifest(label), _newest_base_manifest()
    base_name = json.loads(open(base).read())["name"]
    good = fingerprints()
    forensic_dir = labutil.LAB_ROOT / "postgres" / "forensic"

    # physical forced on a dump: refused before the lock, naming what is missing; nothing changed
    proc = labutil.playbook("restore.yml", "-e", f"recovery_backup={dump}", "-e", "restore_method=physical",
                            "-e", f"approvals={TWO}", REPLYX_ARTIFACTS_DIR=artifacts)
    assert proc.returncode != 0
    assert "restore_method=physical needs a verified physical base backup whose WAL is in the archive" in _flat(proc.stdout)
    assert "backup.yml -e backup_kind=physical" in _flat(proc.stdout)
    assert fingerprints() == good and not LOCK_FILE.exists()

    # auto with the base backup: physical, and the plan says why (in --check, which changes nothing)
    _damage()
    damaged = labutil.psql("select count(*) from dialog_messages")
    check = _play("restore.yml", "-e", f"recovery_backup={base}", "-e", f"approvals={TWO}", "--check",
                  artifacts=artifacts)
    assert f"Restore method: physical: base backup {base_name} verified (sha256), WAL complete in the archive" \
        in _flat(check.stdout)
    assert labutil.psql("select count(*) from dialog_messages") == damaged
    assert labutil.psql("select to_regclass('ai_token_usage') is null") == "True"
    timeline = int(labutil.psql("select timeline_id from pg_control_checkpoint()"))
    forensic_before = set(forensic_dir.glob("data-*"))
    _play("restore.yml", "-e", f"recovery_backup={base}", "-e", f"approvals={TWO}", artifacts=artifacts)
    assert fingerprints() == good
    assert int(labutil.psql("select timeline_id from pg_control_checkpoint()")) == timeline + 1
    assert labutil.psql("show archive_mode") == "on"
    copies = set(forensic_dir.glob("data-*")) - forensic_before
    assert len(copies) == 1 and (copies.pop() / "PG_VERSION").exists(), "the damaged data directory must be kept"
    report = _flat(reports(artifacts)[-1].read_text())
    assert "Database backup restoration (physical)" in report and "**Outcome:** SUCCESS" in report
    assert f"(physical: base backup {base_name} verified (sha256), WAL complete in the archive" in report
    assert "a logical restore would reload every row and rebuild every index" in report
    assert f"physically restored base backup {base_name}" in report and "changed by the restore: chatai.public." in report
    assert "PITR coverage restored" in report
    assert "are not in the physically restored database; the forensic copy of the data directory" in report
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert not LOCK_FILE.exists()

    # logical forced: the forensic backup kept (auto given a dump, logical: test_full_and_table_restore_...)
    _damage()
    _play("restore.yml", "-e", f"recovery_backup={dump}", "-e", "restore_method=logical", "-e", f"approvals={TWO}",
          artifacts=artifacts)
    assert fingerprints() == good
    report = _flat(reports(artifacts)[-1].read_text())
    assert "Database backup restoration (logical)" in report and "**Outcome:** SUCCESS" in report
    assert "(logical: forced by restore_method=logical" in report and "logically restored" in report
    forensic = report.split("the forensic backup ", 1)[1].split(" ", 1)[0]
    assert (forensic_dir / forensic).exists(), forensic
    assert not LOCK_FILE.exists()
