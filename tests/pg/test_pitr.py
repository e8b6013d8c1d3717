"""pg_pitr_restore against real PostgreSQL 18 (embedded, pgvector) and 15 (system binaries).

Every scenario: a base backup by pg_backup kind=physical, rows written, a target recorded from the
server, damage (a dropped table, more rows), pg_switch_wal(), then the real module through ansible
ad-hoc. Assertions are on the recovered data, the forensic copy and what the module reports.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import time
from pathlib import Path

import pytest

from pgserver import PgServer, seed_chatai, start_version

pytestmark = [pytest.mark.pg, pytest.mark.slow]


def _server(version: str) -> PgServer:
    server = start_version(version)
    seed_chatai(server)
    return server


@pytest.fixture(params=["18", "15"])
def server(request):
    srv = _server(request.param)
    yield srv
    srv.stop()


def base_backup(server: PgServer, run_module, dest: Path) -> dict:
    result = run_module("pg_backup", dict(server.conn_params("postgres"), kind="physical", dest=str(dest)))
    assert not result["failed"], explain(result)
    assert result["changed"] is True
    return result


def pitr_args(server: PgServer, backup_dir: Path, **extra) -> dict:
    args = dict(server.conn_params("postgres"), backup_dir=str(backup_dir), wal_archive=str(server.archive_dir),
                data_dir=str(server.data_dir), confirm=True, timeout=300, min_free_bytes=0)
    args.update(extra)
    return args


def ts(text: str) -> datetime.datetime:
    """A timestamp as PostgreSQL or the module prints it ('2026-01-31 03:12:45.1234+00')."""
    text = text.strip().replace(" ", "T", 1)
    if text.endswith(("+00", "-00")):
        text += ":00"
    return datetime.datetime.fromisoformat(text)


def explain(result: dict) -> str:
    keys = ("msg", "module_stderr", "module_stdout", "exception", "stderr", "cmd", "steps_done", "server_log")
    return "\n".join(f"{k}: {result[k]}" for k in keys if result.get(k))


def rows(server: PgServer, sql: str) -> list[str]:
    out = server.psql(sql, dbname="chatai")
    return [line for line in out.splitlines() if line]


def write_history(server: PgServer):
    """Rows before the target, the target (server time), then damage after it. Returns the target."""
    server.psql("INSERT INTO events (id, phase) SELECT g, 'before' FROM generate_series(1, 50) g", dbname="chatai")
    server.psql("INSERT INTO events (id, phase) SELECT g, 'before' FROM generate_series(51, 100) g", dbname="chatai")
    target = server.psql("SELECT now()")
    time.sleep(1.0)
    server.psql("DROP TABLE dialog_messages", dbname="chatai")
    server.psql("INSERT INTO events (id, phase) SELECT g, 'after' FROM generate_series(101, 150) g", dbname="chatai")
    server.psql("DELETE FROM users WHERE id > 100", dbname="chatai")
    return target


def assert_state_at_target(server: PgServer):
    assert rows(server, "SELECT count(*) FROM dialog_messages") == ["3000"]
    assert rows(server, "SELECT count(*) FROM users") == ["200"]
    assert rows(server, "SELECT phase, count(*), min(id), max(id) FROM events GROUP BY 1") == ["before|100|1|100"]


def test_pitr_to_time_promote(server, run_module, tmp_path):
    backups = tmp_path / "backups"
    base_backup(server, run_module, backups)
    target = write_history(server)
    server.switch_wal()
    old_files = set(os.listdir(server.data_dir)) - {"postmaster.pid"}  # removed by the clean stop

    result = run_module("pg_pitr_restore", pitr_args(server, backups, target_time=target,
                                                     forensic_dir=str(tmp_path / "forensic")))
    assert not result["failed"], explain(result)
    assert result["changed"] is True

    assert_state_at_target(server)
    assert rows(server, "SELECT pg_is_in_recovery()") == ["f"]
    if server.version == "18":
        assert rows(server, "SELECT extname FROM pg_extension WHERE extname = 'vector'") == ["vector"]
    # The old data directory is kept, whole, as the forensic copy.
    forensic = Path(result["forensic_copy"])
    assert forensic.parent == tmp_path / "forensic" and forensic.name.startswith("data-")
    assert (forensic / "PG_VERSION").exists() and old_files <= set(os.listdir(forensic))
    reached = result["reached"]
    assert reached["promoted"] is True and reached["paused"] is False
    assert reached["timeline"] == 2 and reached["replay_timeline"] == 1
    assert rows(server, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0].startswith("00000002")
    assert reached["lsn"] and reached["recovery_stop"].startswith("recovery stopping before commit")
    # The last replayed transaction committed at or before the target, and is the last 'before' insert.
    last_before = rows(server, "SELECT max(at) FROM events WHERE phase = 'before'")[0]
    assert ts(last_before) <= ts(reached["timestamp"]) <= ts(target)
    assert result["window"]["start_time"] <= result["window"]["end_time"]
    assert result["settings"]["archive_mode"] == "off"
    assert result["base_backup"]["verified"] is True
    # Recovery settings were cleaned up after promotion; archive_mode=off stays for the operator.
    auto_conf = (server.data_dir / "postgresql.auto.conf").read_text()
    assert "recovery_target_time" not in auto_conf and "archive_mode = 'off'" in auto_conf
    assert not (server.data_dir / "recovery.signal").exists()


def test_pitr_to_restore_point_and_pause(server, run_module, tmp_path):
    backups = tmp_path / "backups"
    base_backup(server, run_module, backups)
    server.psql("INSERT INTO events (id, phase) SELECT g, 'before' FROM generate_series(1, 100) g", dbname="chatai")
    server.psql("SELECT pg_create_restore_point('before_release_42')")
    server.psql("DROP TABLE dialog_messages", dbname="chatai")
    server.psql("INSERT INTO events (id, phase) SELECT g, 'after' FROM generate_series(101, 150) g", dbname="chatai")
    server.psql("DELETE FROM users WHERE id > 100", dbname="chatai")
    server.switch_wal()

    result = run_module("pg_pitr_restore", pitr_args(server, backups, target_name="before_release_42",
                                                     target_action="pause"))
    assert not result["failed"], explain(result)
    assert result["target"]["kind"] == "name"
    reached = result["reached"]
    assert reached["paused"] is True and reached["promoted"] is False
    assert reached["timeline"] == 1 and reached["lsn"]
    assert "before_release_42" in reached["recovery_stop"]
    # Paused at the restore point: read-only, and the data is that of the restore point.
    assert rows(server, "SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()") == ["t|paused"]
    assert_state_at_target(server)
    assert Path(result["forensic_copy"]).parent == server.root


def test_pitr_to_lsn_and_shutdown(server, run_module, tmp_path):
    """target_lsn (exclusive) with target_action=shutdown: the server stops at the target."""
    if server.version == "15":
        pytest.skip("one shutdown scenario is enough; PG 15 runs time/name/pause")
    backups = tmp_path / "backups"
    base_backup(server, run_module, backups)
    server.psql("INSERT INTO events (id, phase) SELECT g, 'before' FROM generate_series(1, 100) g", dbname="chatai")
    lsn = server.psql("SELECT pg_current_wal_insert_lsn()")
    server.psql("DROP TABLE dialog_messages", dbname="chatai")
    server.psql("INSERT INTO events (id, phase) SELECT g, 'after' FROM generate_series(101, 150) g", dbname="chatai")
    server.switch_wal()
    result = run_module("pg_pitr_restore", pitr_args(server, backups, target_lsn=lsn, target_inclusive=False,
                                                     target_action="shutdown"))
    assert not result["failed"], explain(result)
    assert result["reached"]["shut_down"] is True and result["reached"]["lsn"]
    assert result["settings"]["recovery_target_inclusive"] == "off"
    status = subprocess.run(["runuser", "-u", "postgres", "--", server.bin("pg_ctl"), "status", "-D",
                             str(server.data_dir)], capture_output=True)
    assert status.returncode == 3  # not running
