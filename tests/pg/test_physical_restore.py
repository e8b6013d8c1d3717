"""pg_physical_restore against real PostgreSQL 18 (embedded, pgvector) and 15 (system binaries).

One server per version (module scope, restored again and again); each scenario takes its own base
backup by pg_backup kind=physical, damages the cluster, and runs the real module through ansible ad-hoc.
Assertions are on the rows (count and md5 per table, as before the damage), the delta counts the module
returns, the forensic copy, and on refusals leaving the stopped data directory byte for byte as it was.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgserver import PgServer, seed_chatai, start_version
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import sha256_path

pytestmark = [pytest.mark.pg, pytest.mark.slow]

TABLES = ["users", "dialog_messages", "knowledge_embeddings", "events"]


@pytest.fixture(scope="module", params=["18", "15"])
def server(request):
    srv = start_version(request.param)
    seed_chatai(srv)
    yield srv
    srv.stop()


def explain(result: dict) -> str:
    keys = ("msg", "module_stderr", "module_stdout", "exception", "stderr", "cmd", "steps_done", "server_log")
    return "\n".join(f"{k}: {result[k]}" for k in keys if result.get(k))


def ensure_running(server: PgServer) -> None:
    status = subprocess.run(["runuser", "-u", "postgres", "--", server.bin("pg_ctl"), "status", "-D",
                             str(server.data_dir)], capture_output=True)
    if status.returncode != 0:
        server.pg_ctl("start", "-w", "-l", str(server.root / "server.log"))
    if server.psql("SHOW archive_mode") == "off":  # a restore before this one left archiving off (the default)
        server.psql("ALTER SYSTEM RESET archive_mode")
        server.pg_ctl("restart", "-m", "fast", "-w", "-l", str(server.root / "server.log"))


def settle(server: PgServer) -> None:
    """Hint bits and the visibility map set, everything on disk: reading the tables later changes no page."""
    server.psql("VACUUM (FREEZE, ANALYZE)", dbname="chatai")
    server.psql("CHECKPOINT")


def base_backup(server: PgServer, run_module, dest: Path) -> dict:
    result = run_module("pg_backup", dict(server.conn_params("postgres"), kind="physical", dest=str(dest)))
    assert not result["failed"], explain(result)
    return result


def fingerprint(server: PgServer) -> dict:
    out = {}
    for table in TABLES:
        row = server.psql(f"SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                          f"FROM {table} t", dbname="chatai")
        out[table] = tuple(row.split(" "))
    return out


def restore_args(server: PgServer, tmp_path: Path, **extra) -> dict:
    args = dict(server.conn_params("postgres"), backup_dir=str(tmp_path / "backups"),
                wal_archive=str(server.archive_dir), data_dir=str(server.data_dir),
                forensic_dir=str(tmp_path / "forensic"), confirm=True, timeout=300, min_free_bytes=0)
    args.update(extra)
    return args


def relfile(server: PgServer, table: str) -> str:
    return server.psql(f"SELECT pg_relation_filepath('{table}')", dbname="chatai")


def test_sql_damage_restored_to_a_target(server, run_module, tmp_path):
    """A dropped table and deleted rows (in the WAL): the restore to an LSN before them brings every row back."""
    ensure_running(server)
    base_backup(server, run_module, tmp_path / "backups")
    server.psql("INSERT INTO events SELECT g, 'kept' FROM generate_series(1, 100) g", dbname="chatai")
    before = fingerprint(server)
    lsn = server.psql("SELECT pg_current_wal_insert_lsn()")
    server.psql("DROP TABLE dialog_messages", dbname="chatai")
    server.psql("DELETE FROM users WHERE id > 150", dbname="chatai")
    server.psql("INSERT INTO events SELECT g, 'lost' FROM generate_series(101, 150) g", dbname="chatai")
    server.switch_wal(20)

    result = run_module("pg_physical_restore", restore_args(server, tmp_path, target_lsn=lsn,
                                                            target_inclusive=False))
    assert not result["failed"], explain(result)
    assert result["changed"] is True and result["target"]["kind"] == "lsn"
    assert fingerprint(server) == before
    assert server.psql("SELECT pg_is_in_recovery()") == "f"
    if server.version == "18":
        assert server.psql("SELECT extname FROM pg_extension WHERE extname = 'vector'", dbname="chatai") == "vector"
    counts = result["row_counts"]
    assert counts["changes"]["chatai.public.dialog_messages"] == {"before": None, "after": 3000}
    assert counts["changes"]["chatai.public.users"] == {"before": 150, "after": 200}
    assert counts["after"]["chatai.public.events"] == 100
    forensic = Path(result["forensic_copy"])
    assert forensic.parent == tmp_path / "forensic" and (forensic / "PG_VERSION").is_file()
    assert result["delta"]["mode"] == "delta" and result["delta"]["copied"] > 0


def test_corrupted_file_delta_restore_to_end_of_archive(server, run_module, tmp_path):
    """A relation file overwritten on disk (no WAL says so): the whole archive is replayed, and the delta
    writes only the files that differ: far fewer than the backup holds, the big untouched table not among them."""
    ensure_running(server)
    settle(server)
    base_backup(server, run_module, tmp_path / "backups")
    server.psql("INSERT INTO events SELECT g, 'after-backup' FROM generate_series(1001, 1010) g", dbname="chatai")
    server.switch_wal(20)
    before = fingerprint(server)
    users_file, messages_file = relfile(server, "users"), relfile(server, "dialog_messages")
    server.pg_ctl("stop", "-m", "fast", "-w")
    target = server.data_dir / users_file
    size = target.stat().st_size
    target.write_bytes(b"\xde\xad" * (size // 2))  # same size: only the checksum tells
    damaged_sha = sha256_path(str(target))

    result = run_module("pg_physical_restore", restore_args(server, tmp_path))
    assert not result["failed"], explain(result)
    assert result["target"]["kind"] == "end" and result["server_running"] is False
    assert "recovery_target_action" not in result["settings"]
    assert fingerprint(server) == before
    delta = result["delta"]
    copied = {line.rsplit(" (", 1)[0]: line.rsplit(" (", 1)[1].rstrip(")") for line in delta["copied_files"]}
    assert copied[users_file] == "checksum"
    assert messages_file not in copied
    assert "global/pg_control" in copied and "backup_label" in copied
    assert delta["copied"] == len(copied) and delta["copied"] + delta["skipped"] == delta["files_in_backup"]
    assert delta["copied"] <= 40 and delta["copied"] * 10 < delta["files_in_backup"], delta
    print("delta:", {k: delta[k] for k in ("files_in_backup", "copied", "skipped", "removed", "reasons")})
    assert delta["bytes_skipped"] > 0 and set(delta["reasons"]) <= {"missing", "size", "checksum"}, delta
    # No server ran, so no counts before; after, every table is there.
    assert result["row_counts"]["before"] is None and result["row_counts"]["after"]["chatai.public.users"] == 200
    # The forensic copy holds the damaged file as it was.
    assert sha256_path(str(Path(result["forensic_copy"]) / users_file)) == damaged_sha


def test_full_mode_and_no_forensic_copy(server, run_module, tmp_path):
    """delta=false writes every file; forensic_copy=false keeps no copy. The rows are back either way."""
    if server.version == "15":
        pytest.skip("the copy itself does not depend on the version; PG 15 runs the delta and the refusals")
    ensure_running(server)
    base_backup(server, run_module, tmp_path / "backups")
    before = fingerprint(server)
    lsn = server.psql("SELECT pg_current_wal_insert_lsn()")
    server.psql("TRUNCATE events; DELETE FROM knowledge_embeddings WHERE id % 2 = 0", dbname="chatai")
    server.switch_wal(20)
    result = run_module("pg_physical_restore", restore_args(server, tmp_path, target_lsn=lsn, delta=False,
                                                            forensic_copy=False))
    assert not result["failed"], explain(result)
    assert fingerprint(server) == before
    assert result["delta"]["mode"] == "full"
    assert result["delta"]["copied"] == result["delta"]["files_in_backup"] and result["delta"]["skipped"] == 0
    assert result["forensic_copy"] is None and not (tmp_path / "forensic").exists()


def test_refusals_change_nothing(server, run_module, tmp_path):
    """A base backup whose checksum is wrong, a missing WAL segment, no confirm: refused in preflight, the
    stopped data directory byte for byte as before, no forensic copy. Check mode changes nothing either."""
    ensure_running(server)
    result = base_backup(server, run_module, tmp_path / "backups")
    # The backup's own last segment is archived when it ends; two more after it, the first to go missing.
    server.psql("INSERT INTO events SELECT g, 'seg1' FROM generate_series(2000, 2009) g", dbname="chatai")
    gap = server.switch_wal(20)
    server.psql("INSERT INTO events SELECT g, 'seg2' FROM generate_series(2010, 2019) g", dbname="chatai")
    server.switch_wal(20)
    server.pg_ctl("stop", "-m", "fast", "-w")
    data_sha = sha256_path(str(server.data_dir))

    def refused(args, words):
        res = run_module("pg_physical_restore", args)
        assert res["failed"] and words in res["msg"], explain(res)
        assert res.get("changed") is False
        assert sha256_path(str(server.data_dir)) == data_sha
        assert not (tmp_path / "forensic").exists()
        return res

    if server.version == "18":  # neither depends on the version: PG 15 runs the two that read backup and WAL
        refused(restore_args(server, tmp_path, confirm=False), "confirm=true is required")
        # Check mode: the plan and a preview of the delta, nothing written.
        plan = run_module("pg_physical_restore", restore_args(server, tmp_path, confirm=False), check_mode=True)
        assert not plan["failed"] and plan["changed"] is False, explain(plan)
        assert plan["delta"]["preview"] is True and 0 < plan["delta"]["copied"] < plan["delta"]["files_in_backup"]
        assert plan["target"]["kind"] == "end" and plan["steps"][0].startswith("copy ")
        assert sha256_path(str(server.data_dir)) == data_sha and not (tmp_path / "forensic").exists()
    # A missing segment in the middle of the archive: WAL after it cannot be replayed.
    moved = tmp_path / gap
    os.rename(server.archive_dir / gap, moved)
    try:
        res = refused(restore_args(server, tmp_path), "WAL continuity")
        assert gap in res["msg"]
    finally:
        os.rename(moved, server.archive_dir / gap)
    # A base backup altered after it was taken.
    backup_path = Path(result["path"])
    tar = backup_path / "base.tar"
    with open(tar, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))
    refused(restore_args(server, tmp_path, base_backup=str(backup_path)), "checksum mismatch")
