"""pg_pitr_restore refusals and check mode on real PostgreSQL 18: each gives a clear
"Failed to ...: ..." message and changes nothing (server still up, same postmaster, data untouched,
no forensic copy, archive untouched)."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from pgserver import PgServer, embedded_bin_dir

pytestmark = [pytest.mark.pg, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory, run_module_for_module):
    """A server with a base backup, history after it (a target inside the window), the WAL archived."""
    run_module = run_module_for_module
    server = PgServer(bin_dir=embedded_bin_dir()).start()
    tmp = tmp_path_factory.mktemp("pitr-errors")
    try:
        server.psql("CREATE TABLE t (id int PRIMARY KEY, phase text)")
        before_backup = server.psql("SELECT now()")
        time.sleep(1.0)
        # A commit after that moment and before the backup: the backup cannot show the state at before_backup.
        server.psql("INSERT INTO t VALUES (0, 'pre-backup')")
        backups = tmp / "backups"
        result = run_module("pg_backup", dict(server.conn_params("postgres"), kind="physical", dest=str(backups)))
        assert not result["failed"], result
        # Several segments of history after the backup, so one can go missing in the middle.
        for batch in range(3):
            server.psql(f"INSERT INTO t SELECT g, 'b{batch}' FROM generate_series({batch * 100 + 1}, {batch * 100 + 100}) g")
            server.switch_wal()
        target = server.psql("SELECT now()")
        time.sleep(1.0)
        server.psql("DROP TABLE t")
        server.switch_wal()
        yield dict(server=server, tmp=tmp, backups=backups, manifest=result["manifest_path"],
                   backup_path=result["path"], target=target, before_backup=before_backup)
    finally:
        server.stop()


def snapshot(server: PgServer) -> dict:
    """What must not change: the running postmaster, the data directory listing, the archive, the root."""
    return dict(
        started=server.psql("SELECT pg_postmaster_start_time()"),
        in_recovery=server.psql("SELECT pg_is_in_recovery()"),
        data=sorted(os.listdir(server.data_dir)),
        archive=sorted(os.listdir(server.archive_dir)),
        root=sorted(os.listdir(server.root)),
        auto_conf=(server.data_dir / "postgresql.auto.conf").read_text(),
    )


def args(env, **extra):
    server = env["server"]
    out = dict(server.conn_params("postgres"), backup_dir=str(env["backups"]), wal_archive=str(server.archive_dir),
               data_dir=str(server.data_dir), confirm=True, target_time=env["target"], min_free_bytes=0)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def fails(run_module, env, expected: list[str], **extra) -> dict:
    before = snapshot(env["server"])
    result = run_module("pg_pitr_restore", args(env, **extra))
    assert result["failed"] is True, result
    assert result["changed"] is False
    for text in expected:
        assert text in result["msg"], result["msg"]
    assert snapshot(env["server"]) == before
    return result


def shift(ts: str, seconds: float) -> str:
    value = datetime.datetime.fromisoformat(ts.replace(" ", "T").replace("+00", "+00:00"))
    return (value + datetime.timedelta(seconds=seconds)).isoformat(sep=" ")


def test_check_mode_returns_the_plan_and_changes_nothing(env, run_module):
    before = snapshot(env["server"])
    result = run_module("pg_pitr_restore", args(env, confirm=None), check_mode=True)
    assert not result["failed"], result.get("msg")
    assert result["changed"] is False
    assert result["server_running"] is True
    assert result["base_backup"]["manifest_path"] == env["manifest"]
    assert result["settings"]["recovery_target_time"].startswith(env["target"][:19])
    assert result["steps"][0].startswith("stop the server") and "move" in result["steps"][1]
    assert result["forensic_copy"].startswith(str(env["server"].root / "data-"))
    assert result["window"]["start_time"] <= result["window"]["end_time"]
    assert result["window"]["segment_count"] >= 4 and result["window"]["gap"] is None
    assert "reached" not in result
    assert snapshot(env["server"]) == before


def test_target_before_the_oldest_base_backup(env, run_module):
    fails(run_module, env, ["Failed to choose a base backup:", "no verified base backup"],
          target_time=env["before_backup"])
    fails(run_module, env, ["Failed to check the recoverable window:", "before the end of base backup"],
          backup_dir=None, base_backup=env["manifest"], target_time=env["before_backup"])


def test_target_after_the_newest_wal(env, run_module):
    later = shift(env["server"].psql("SELECT now()"), 3600)
    fails(run_module, env, ["Failed to check the recoverable window:", "newest transaction in the archived WAL",
                            "pg_switch_wal"], target_time=later)


def test_lsn_after_the_newest_wal(env, run_module):
    fails(run_module, env, ["Failed to check the recoverable window:", "after the last archived WAL record"],
          target_time=None, target_lsn="FF/0")


def test_missing_wal_segment(env, run_module, tmp_path):
    server = env["server"]
    archive = tmp_path / "archive"
    shutil.copytree(server.archive_dir, archive)
    segments = sorted(n for n in os.listdir(archive) if len(n) == 24)
    result = run_module("pg_pitr_restore", args(env, wal_archive=str(archive)), check_mode=True)
    assert not result["failed"], result.get("msg")
    victim = segments[-2]  # between the backup and the target
    (archive / victim).unlink()
    os.chown(archive, 0, 0)
    result = fails(run_module, env, ["Failed to verify WAL continuity:", f"segment {victim} is missing"],
                   wal_archive=str(archive))
    assert "contiguous" in result["msg"]


def test_manifest_missing(env, run_module, tmp_path):
    fails(run_module, env, ["Failed to load backup manifest", "the manifest does not exist"],
          backup_dir=None, base_backup=str(tmp_path / "nope.manifest.json"))


def test_checksum_mismatch(env, run_module, tmp_path):
    copy = tmp_path / Path(env["backup_path"]).name
    shutil.copytree(env["backup_path"], copy)
    manifest = json.loads(Path(env["manifest"]).read_text())
    manifest["path"] = str(copy)
    mpath = Path(str(copy) + ".manifest.json")
    mpath.write_text(json.dumps(manifest))
    with open(copy / "base.tar", "ab") as fh:
        fh.write(b"\0" * 512)
    fails(run_module, env, ["Failed to verify backup", "checksum mismatch"], backup_dir=None, base_backup=str(mpath))


def test_confirm_missing(env, run_module):
    fails(run_module, env, ["Failed to restore data directory", "confirm=true is required"], confirm=None)


def test_two_targets(env, run_module):
    fails(run_module, env, ["Failed to validate the recovery target:", "give exactly one of",
                            "got target_time, target_lsn"], target_lsn="0/3000000")


def test_time_without_zone(env, run_module):
    fails(run_module, env, ["Failed to parse target_time:", "no time zone"], target_time=env["target"].split("+")[0])


def test_unknown_restore_point_and_xid(env, run_module):
    fails(run_module, env, ["Failed to check the recoverable window:", "restore point 'nope' is not in the archived WAL"],
          target_time=None, target_name="nope")
    fails(run_module, env, ["Failed to check the recoverable window:", "transaction 999999 is not in the archived WAL"],
          target_time=None, target_xid="999999")
