"""WAL archiving on real PostgreSQL 18 with the postgres role's archive_command (replyx_archive_wal.py):
segments land whole in an archive whose path holds a space, a quote and an é; an archive_command pointing
at a missing directory fails while the server runs happily, and pg_status names the failure."""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

from pgserver import OS_USER, PgServer, embedded_bin_dir

pytestmark = [pytest.mark.pg, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "postgres" / "files" / "replyx_archive_wal.py"
PORT = int(os.environ.get("REPLYX_TEST_ARCHIVE_PG_PORT", "55731"))


def set_archive_command(server: PgServer, archive_dir: Path) -> None:
    """As the role's template builds it: shell-quoted paths, % doubled, quotes doubled for SQL."""
    target = shlex.quote(str(archive_dir).replace("%", "%%") + "/%f")
    command = " ".join([shlex.quote("/usr/bin/python3"), shlex.quote(str(SCRIPT)), "%p", target])
    server.psql("ALTER SYSTEM SET archive_command = '%s'" % command.replace("'", "''"))
    server.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)


def archiver(server: PgServer) -> dict:
    archived, failed, last_failed = server.psql(
        "SELECT archived_count, failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver").split("|")
    return dict(archived=int(archived), failed=int(failed), last_failed_wal=last_failed)


def new_segment(server: PgServer) -> str:
    """Write something and close the segment; the name of the closed segment."""
    server.psql("CREATE TABLE IF NOT EXISTS probe (x int); INSERT INTO probe VALUES (1)")
    return server.psql("SELECT pg_walfile_name(pg_switch_wal())")


@pytest.fixture(scope="module")
def server():
    srv = PgServer(bin_dir=embedded_bin_dir(), port=PORT).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_archive_command_copies_whole_segments_into_a_quoted_path(server, run_module):
    archive_dir = server.root / "it's a wal archive é"
    archive_dir.mkdir()
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415
        pw = pwd.getpwnam(OS_USER)
        os.chown(archive_dir, pw.pw_uid, pw.pw_gid)
    set_archive_command(server, archive_dir)
    name = new_segment(server)
    deadline = time.monotonic() + 60
    while not (archive_dir / name).exists():
        assert time.monotonic() < deadline, f"{name} was not archived: {server.psql('SELECT * FROM pg_stat_archiver')}"
        time.sleep(0.2)
    assert (archive_dir / name).stat().st_size == 16 * 1024 * 1024
    assert not [n for n in os.listdir(archive_dir) if n.startswith(".")], os.listdir(archive_dir)
    result = run_module("pg_status", server.conn_params("postgres"))
    arch = result["wal_archiving"]
    assert not result["failed"] and arch["ok"] is True and arch["problems"] == [], arch
    assert arch["ready_count"] == 0 and arch["last_archived_wal"] == name


def test_pg_status_names_a_broken_archive_command(server, run_module):
    missing = server.root / "no such archive"
    set_archive_command(server, missing)
    before = archiver(server)
    name = new_segment(server)
    deadline = time.monotonic() + 60
    while archiver(server)["failed"] == before["failed"]:
        assert time.monotonic() < deadline, "the archiver did not fail"
        time.sleep(0.5)
    assert server.psql("SELECT 1") == "1"  # the server runs happily
    result = run_module("pg_status", server.conn_params("postgres"))
    arch = result["wal_archiving"]
    assert not result["failed"] and result["changed"] is False
    assert arch["ok"] is False and arch["failing"] is True and arch["last_failed_wal"] == name, arch
    assert "archiving is failing: archive_command failed on %s" % name in arch["problems"][0], arch["problems"]
    assert arch["ready_count"] >= 1
    log = (server.root / "server.log").read_text(errors="replace")
    assert "the archive directory %s does not exist" % missing in log
    # a threshold of 1 s: the segment waiting is a second problem
    time.sleep(1.1)
    result = run_module("pg_status", dict(server.conn_params("postgres"), archive_max_age_s=1))
    assert any("wait to be archived" in p for p in result["wal_archiving"]["problems"]), result["wal_archiving"]


def test_the_wal_chain_of_a_new_base_backup_is_complete_at_once(server, run_module, tmp_path):
    """What backup.yml checks after a physical backup: pg_basebackup waits for its WAL to be archived, so the
    archive holds the new backup's WAL when the module returns; a segment removed is named."""
    archive_dir = server.root / "it's a wal archive é"
    set_archive_command(server, archive_dir)  # working again: the failed segment is retried first
    deadline = time.monotonic() + 60
    while archiver(server)["failed"] and not os.path.exists(archive_dir / archiver(server)["last_failed_wal"]):
        assert time.monotonic() < deadline, "the archiver did not recover"
        time.sleep(0.5)
    backups = tmp_path / "basebackups"
    result = run_module("pg_backup", dict(server.conn_params("postgres"), kind="physical", dest=str(backups)))
    assert not result["failed"], result
    args = dict(server.conn_params("postgres"), wal_archive=str(archive_dir), basebackup_dir=str(backups))
    chain = run_module("pg_status", args)["wal_archiving"]["chain"]
    assert chain["complete"] is True and chain["problems"] == [], chain
    first = archive_dir / chain["first_segment"]
    aside = first.rename(first.with_name(first.name + ".aside"))
    try:
        status = run_module("pg_status", args)["wal_archiving"]
    finally:
        aside.rename(first)
    assert status["ok"] is False and status["chain"]["missing"] == first.name
    assert "segment %s is missing from %s" % (first.name, archive_dir) in status["problems"][-1]
