"""pg_backup / pg_restore against real PostgreSQL 18 (embedded, pgvector) and the machine's PostgreSQL 15.

Every test starts from and returns to the seeded ``chatai`` state (its fingerprint: row count and md5
of every table). PG 15 has no pgvector on this machine: its ``chatai`` has no vector column/extension.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

pytestmark = [pytest.mark.pg, pytest.mark.slow]

NEWEST = Path(__file__).resolve().parents[2] / "roles" / "validation" / "files" / "newest_verified_backup.py"


@pytest.fixture(scope="module", params=["pg18", "pg15"])
def server(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def baseline(server, fingerprint):
    return fingerprint(server)


@pytest.fixture()
def dest(tmp_path):
    d = tmp_path / "backups"
    d.mkdir()
    return d


def listing(root) -> dict:
    """Every file below root with its size and mode: a check-mode or failure test compares two of these."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size if name in filenames else None, oct(st.st_mode))
    return out


def backup(server, dest, **kw):
    args = dict(server.conn_params("chatai"), dest=str(dest))
    args.update(kw)
    return args


def restore_args(server, manifest_path, **kw):
    args = dict(server.conn_params("postgres"), backup=str(manifest_path))
    args.update(kw)
    return args


def ok(result):
    assert not result["failed"], json.dumps(result, indent=1)[:4000]
    return result


# ------------------------------------------------------------------------------------------ backups

@pytest.mark.parametrize("fmt,jobs", [("custom", 1), ("directory", 3), ("plain", 1)])
def test_logical_backup_writes_verified_private_backup_and_manifest(server, dest, baseline, run_module, fmt, jobs):
    r = ok(run_module("pg_backup", backup(server, dest, format=fmt, jobs=jobs, label="t1")))
    assert r["changed"] is True
    m = r["backup"]
    path = dest / m["name"]
    assert m["path"] == str(path) and os.path.exists(path)
    assert sorted(os.listdir(dest)) == sorted([m["name"], m["name"] + ".manifest.json"])
    on_disk = json.loads((dest / (m["name"] + ".manifest.json")).read_text())
    assert on_disk["sha256"] == m["sha256"] and on_disk["verified"] is True
    assert m["database"] == "chatai" and m["kind"] == "logical" and m["format"] == fmt
    assert m["alembic_revision"] == "a1b2c3d4e5f6"
    assert m["server_version_num"] // 10000 == (18 if server.has_vector else 15)
    assert m["pg_dump_version"].startswith("pg_dump (PostgreSQL)")
    assert m["tables"] == {"public." + t: n for t, (n, _) in baseline.items()}
    assert ("vector" in m["extensions"]) is server.has_vector
    assert m["size_bytes"] > 0 and m["duration_s"] >= 0 and m["created"].endswith("Z")
    for p, (_, mode) in listing(dest).items():
        assert mode.endswith("600" if not os.path.isdir(dest / p) else "700"), (p, mode)
    assert server.password not in json.dumps(r)
    assert all(server.password not in arg for argv in r["commands"] for arg in argv)
    # Same label again: verified backup exists -> changed=false, the same manifest.
    again = ok(run_module("pg_backup", backup(server, dest, format=fmt, jobs=jobs, label="t1")))
    assert again["changed"] is False and again["backup"]["sha256"] == m["sha256"]


@pytest.mark.parametrize("fmt,jobs", [("directory", 2), ("custom", 1), ("plain", 1)])
def test_manifest_checksums_equal_an_independent_sha256_of_each_file(server, dest, run_module, fmt, jobs):
    """The files are hashed in the same (parallel) read that makes them private: the manifest's checksums
    are those of the bytes on disk."""
    r = ok(run_module("pg_backup", backup(server, dest, format=fmt, jobs=jobs)))
    m = r["backup"]
    assert m["sha256_scheme"] == "files"
    path = dest / m["name"]
    if fmt != "directory":
        assert m["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and "files" not in m
        assert m["size_bytes"] == path.stat().st_size
        return
    on_disk = sorted(os.listdir(path))
    assert sorted(m["files"]) == on_disk and "toc.dat" in on_disk
    lines = b""
    for rel in on_disk:
        data = (path / rel).read_bytes()
        assert m["files"][rel] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
        lines += b"%s\0%d\0%s\n" % (rel.encode(), len(data), hashlib.sha256(data).hexdigest().encode())
    assert m["sha256"] == hashlib.sha256(lines).hexdigest()
    assert m["size_bytes"] == sum(f["size"] for f in m["files"].values())
    assert set(r["timings"]) >= {"connect_s", "dump_s", "verify_s", "row_counts_s", "checksum_s", "total_s"}
    # the deployment check (roles/validation) recomputes the same checksum independently
    found = json.loads(subprocess.run([sys.executable, str(NEWEST), str(dest)], check=True, capture_output=True,
                                      text=True).stdout)
    assert found["found"] and found["newest"]["name"] == m["name"], found


def test_corrupted_file_of_a_directory_backup_is_refused_on_restore(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest, format="directory", jobs=2)))
    biggest = max(b["backup"]["files"], key=lambda rel: b["backup"]["files"][rel]["size"])
    target = os.path.join(b["path"], biggest)
    with open(target, "r+b") as fh:  # one byte flipped, same size: only the content checksum can tell
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    before = listing(dest)
    r = run_module("pg_restore", restore_args(server, b["manifest_path"], confirm=True))
    assert_failed(r, "Failed to verify backup ")
    assert "checksum mismatch" in r["msg"] and biggest in r["msg"], r["msg"]
    assert listing(dest) == before and fingerprint(server) == baseline
    found = json.loads(subprocess.run([sys.executable, str(NEWEST), str(dest)], check=True, capture_output=True,
                                      text=True).stdout)
    assert not found["found"] and "checksum mismatch" in found["checked"][0]["reason"], found


def test_row_counts_only_when_asked(server, dest, baseline, run_module):
    exact = ok(run_module("pg_backup", backup(server, dest, format="directory", jobs=2, label="exact")))
    assert exact["backup"]["row_counts"] == "exact"  # the default: pg_restore checks them after a restore
    assert exact["backup"]["tables"] == {"public." + t: n for t, (n, _) in baseline.items()}
    assert any(a.startswith("--snapshot=") for a in exact["commands"][0])
    none = ok(run_module("pg_backup", backup(server, dest, format="directory", jobs=2, label="none",
                                             row_counts="none")))
    m = none["backup"]
    assert m["row_counts"] == "none" and set(m["tables"]) == set(exact["backup"]["tables"])
    assert all(v is None for v in m["tables"].values())
    assert not any(a.startswith("--snapshot=") for a in none["commands"][0])  # no snapshot exported
    assert none["timings"]["row_counts_s"] < 0.05


def test_backup_table_and_schema_filters(server, dest, run_module):
    r = ok(run_module("pg_backup", backup(server, dest, tables=["public.users", "public.dialogs"])))
    assert sorted(r["backup"]["tables"]) == ["public.dialogs", "public.users"]
    assert any("--table=public.users" in argv for argv in r["commands"][0:1] for argv in [r["commands"][0]]) or \
        "--table=public.users" in r["commands"][0]
    r = ok(run_module("pg_backup", backup(server, dest, exclude_tables=["public.dialog_messages"],
                                          row_counts="estimate")))
    assert "public.dialog_messages" not in r["backup"]["tables"] and "public.users" in r["backup"]["tables"]


def test_physical_backup_records_wal_position(server, dest, run_module):
    r = ok(run_module("pg_backup", backup(server, dest, kind="physical", label="base1")))
    m = r["backup"]
    assert m["kind"] == "physical" and m["format"] == "tar" and os.path.isdir(m["path"])
    assert os.path.exists(os.path.join(m["path"], "base.tar"))
    assert m["start_lsn"] and m["stop_lsn"] and m["timeline"] == 1
    assert len(m["start_wal_file"]) == 24 and m["start_wal_file"] <= m["stop_wal_file"]
    assert m["stop_time"] >= m["started"]
    # The WAL file names agree with the server's own arithmetic.
    assert server.psql(f"SELECT pg_walfile_name('{m['start_lsn']}')") == m["start_wal_file"]


def test_retention_keeps_newest_and_reports_deleted(server, dest, run_module):
    names = []
    for i in range(4):
        names.append(ok(run_module("pg_backup", backup(server, dest, label=f"r{i}")))["backup"]["name"])
        time.sleep(1.1)  # created has second precision
    r = ok(run_module("pg_backup", backup(server, dest, label="r4", keep_last=2)))
    assert [os.path.basename(p) for p in r["deleted"]] == names[:3]
    left = sorted(n for n in os.listdir(dest) if not n.endswith(".manifest.json"))
    assert left == sorted([names[3], r["backup"]["name"]])


def test_backup_check_mode_changes_nothing(server, dest, run_module):
    ok(run_module("pg_backup", backup(server, dest, label="existing")))
    before = listing(dest)
    r = ok(run_module("pg_backup", backup(server, dest, format="directory", jobs=2, keep_last=1), check_mode=True))
    assert listing(dest) == before
    assert r["changed"] is True
    dump = r["commands"][0]
    assert os.path.basename(dump[0]) == "pg_dump" and "--format=directory" in dump and "--jobs=2" in dump
    assert dump[2] == "--file=" + r["path"] + ".partial"
    assert r["commands"][1][1:] == ["--list", r["path"] + ".partial"]
    assert [os.path.basename(p) for p in r["deleted"]] == []  # the newest verified backup is never deleted


# ------------------------------------------------------------------------------------------ restores

def damage(server):
    server.psql("DROP TABLE knowledge_embeddings; DELETE FROM dialog_messages WHERE id % 3 = 0; "
                "UPDATE users SET name = 'x' WHERE id < 50", dbname="chatai")


@pytest.mark.parametrize("fmt,jobs", [("custom", 2), ("directory", 3), ("plain", 1)])
def test_full_restore_after_damage(server, dest, baseline, fingerprint, run_module, fmt, jobs):
    b = ok(run_module("pg_backup", backup(server, dest, format=fmt, jobs=1 if fmt != "directory" else jobs)))
    damage(server)
    damaged = fingerprint(server)
    assert damaged != baseline and "knowledge_embeddings" not in damaged
    # A session left open on chatai (a "writer") is terminated by the restore.
    writer = psycopg.connect(server.dsn("chatai"), autocommit=True)
    try:
        r = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="full", jobs=jobs,
                                                    confirm=True, forensic_dest=str(dest / "forensic"))))
    finally:
        writer.close()
    assert r["changed"] is True
    assert fingerprint(server) == baseline
    assert r["tables"] == {"public." + t: n for t, (n, _) in baseline.items()}
    assert ("vector" in r["extensions"]) is server.has_vector
    if server.has_vector:
        assert server.psql("SELECT extname FROM pg_extension WHERE extname = 'vector'", dbname="chatai") == "vector"
    # The forensic backup holds the damaged state, verified.
    f = r["forensic_backup"]
    assert f["verified"] is True and f["forensic"] is True and os.path.exists(f["path"])
    assert "public.knowledge_embeddings" not in f["tables"]
    assert f["tables"]["public.dialog_messages"] == damaged["dialog_messages"][0]
    assert server.password not in json.dumps(r)


def test_single_table_restore_data_only(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest)))
    server.psql("DELETE FROM dialog_messages WHERE id % 2 = 0; UPDATE users SET name = 'gone' WHERE id < 10",
                dbname="chatai")
    other_before = fingerprint(server, tables=["dialogs", "assistants"])
    r = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="tables",
                                                tables=["dialog_messages", "public.users"], confirm=True)))
    assert r["tables"] == {"public.dialog_messages": baseline["dialog_messages"][0],
                           "public.users": baseline["users"][0]}
    assert fingerprint(server) == baseline
    assert fingerprint(server, tables=["dialogs", "assistants"]) == other_before


def test_single_table_restore_with_definition(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest, format="directory")))
    fks_before = server.psql("SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint", dbname="chatai")
    idx_before = server.psql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
                             "WHERE schemaname = 'public'", dbname="chatai")
    server.psql("DROP TABLE dialogs CASCADE", dbname="chatai")  # also drops dialog_messages' foreign key
    r = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="tables", tables=["dialogs"],
                                                data_only=False, confirm=True)))
    assert r["tables"] == {"public.dialogs": baseline["dialogs"][0]}
    assert fingerprint(server) == baseline
    assert server.psql("SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint",
                       dbname="chatai") == fks_before
    assert server.psql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
                       "WHERE schemaname = 'public'", dbname="chatai") == idx_before
    # The serial sequence continues after the restored ids.
    assert int(server.psql("SELECT nextval('dialogs_id_seq')", dbname="chatai")) > baseline["dialogs"][0]


def test_schema_only_restore_gives_empty_tables(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest)))
    r = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="schema_only", confirm=True)))
    fp = fingerprint(server)
    assert set(fp) == set(baseline) and all(n == 0 for n, _ in fp.values())
    # Put the data back for the following tests.
    ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="full", confirm=True,
                                            forensic_backup=False)))
    assert fingerprint(server) == baseline
    assert r["forensic_backup"]["tables"]["public.users"] == baseline["users"][0]


def test_restore_check_mode_changes_nothing(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest)))
    before = listing(dest)
    for kw in (dict(mode="full", jobs=2), dict(mode="tables", tables=["users"], data_only=False),
               dict(mode="tables", tables=["users"])):
        r = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], **kw), check_mode=True))
        assert listing(dest) == before
        assert fingerprint(server) == baseline
        assert r["changed"] is False or r["changed"] is True  # reported plan
        assert r["steps"][0].startswith("verified backup")
        assert any(os.path.basename(argv[0]) == "pg_dump" for argv in r["commands"])  # the forensic backup plan
    full = ok(run_module("pg_restore", restore_args(server, b["manifest_path"], mode="full"), check_mode=True))
    assert any(q.startswith('DROP DATABASE "chatai"') for q in full["queries"])


# ------------------------------------------------------------------------------------------ errors

def assert_failed(result, starts):
    assert result["failed"] is True, json.dumps(result, indent=1)[:3000]
    assert result["msg"].startswith(starts), result["msg"]
    assert result.get("changed") is False


def test_error_manifest_missing(server, dest, baseline, fingerprint, run_module):
    r = run_module("pg_restore", restore_args(server, dest / "nope.dump.manifest.json", confirm=True))
    assert_failed(r, "Failed to load backup manifest ")
    assert "does not exist" in r["msg"]
    assert os.listdir(dest) == [] and fingerprint(server) == baseline


def test_error_checksum_mismatch(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest, format="plain")))
    with open(b["path"], "a") as fh:
        fh.write("-- tampered\n")
    before = listing(dest)
    r = run_module("pg_restore", restore_args(server, b["manifest_path"], confirm=True))
    assert_failed(r, "Failed to verify backup ")
    assert "checksum mismatch" in r["msg"]
    assert listing(dest) == before and fingerprint(server) == baseline  # no forensic backup either


def test_error_database_does_not_exist(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest)))
    before = listing(dest)
    r = run_module("pg_restore", restore_args(server, b["manifest_path"], target_database="nope", confirm=True))
    assert_failed(r, "Failed to restore database nope: ")
    assert 'database "nope" does not exist' in r["msg"]
    r = run_module("pg_backup", dict(backup(server, dest), login_db="nope"))
    assert_failed(r, "Failed to back up database nope: ")
    assert listing(dest) == before and fingerprint(server) == baseline


def test_error_wrong_password(server, dest, baseline, fingerprint, run_module):
    r = run_module("pg_backup", dict(backup(server, dest), login_password="wrong-pw-7731"))
    assert_failed(r, "Failed to back up database chatai: password authentication failed")
    assert "wrong-pw-7731" not in json.dumps(r)
    assert os.listdir(dest) == []
    b = ok(run_module("pg_backup", backup(server, dest)))
    before = listing(dest)
    r = run_module("pg_restore", dict(restore_args(server, b["manifest_path"], confirm=True),
                                      login_password="wrong-pw-7731"))
    assert_failed(r, "Failed to restore database chatai: password authentication failed")
    assert listing(dest) == before and fingerprint(server) == baseline


def test_error_confirm_missing(server, dest, baseline, fingerprint, run_module):
    b = ok(run_module("pg_backup", backup(server, dest)))
    before = listing(dest)
    for kw in (dict(mode="full"), dict(mode="tables", tables=["users"]), dict(mode="schema_only")):
        r = run_module("pg_restore", restore_args(server, b["manifest_path"], **kw))
        assert_failed(r, "Failed to restore ")
        assert "confirm: true is required" in r["msg"]
    assert listing(dest) == before and fingerprint(server) == baseline


def test_error_destination_not_writable(server, dest, run_module):
    if subprocess.run(["chattr", "+i", str(dest)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here (root ignores file modes)")
    try:
        r = run_module("pg_backup", backup(server, dest))
        assert_failed(r, "Failed to back up database chatai: destination ")
        assert "not writable" in r["msg"]
        assert os.listdir(dest) == []
    finally:
        subprocess.run(["chattr", "-i", str(dest)], check=True)


def test_error_server_down_during_backup(server, dest, baseline, fingerprint, run_module):
    """pg_dump is blocked on a lock, the server dies: the partial is removed and no manifest is written."""
    holder = psycopg.connect(server.dsn("chatai"))
    holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    results = {}
    t = threading.Thread(target=lambda: results.update(r=run_module("pg_backup", backup(server, dest,
                                                                                        format="directory"))))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = server.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND datname = 'chatai'")
            if waiting == "1":
                break
            time.sleep(0.2)
        else:
            pytest.fail("pg_dump never waited on the lock")
        partials = [n for n in os.listdir(dest) if n.endswith(".partial")]
        assert partials, "pg_dump should be writing its partial directory"
        server.pg_ctl("stop", "-m", "immediate", "-w")
        t.join(120)
    finally:
        holder.close()
        if t.is_alive():
            t.join(120)
        server.pg_ctl("start", "-w", "-l", str(server.root / "server.log"))
        server.wait_ready()
    r = results["r"]
    assert_failed(r, "Failed to back up database chatai: ")
    assert os.listdir(dest) == []  # no .partial, no backup, no manifest
    assert fingerprint(server) == baseline
