# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _backup
from ansible_collections.replyx.rollback.plugins.module_utils._backup import (
    Backup, backup_argument_spec, backup_name, basebackup_argv, dump_argv, parse_backup_label, parse_toc,
    resolve_format, select_for_deletion, stderr_failure, toc_extensions, toc_tables, validate, wal_file_name)
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import write_manifest
from ansible_collections.replyx.rollback.plugins.module_utils._pg import pg_common_argument_spec

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures_backup")


def params(**kw):
    spec = pg_common_argument_spec()
    spec.update(backup_argument_spec())
    p = dict((k, v.get("default")) for k, v in spec.items())
    p.update(login_password="s3cret-pw", login_db="chatai", dest="/backups")
    p.update(kw)
    return p


class FakeModule(object):
    def __init__(self, check_mode=False, **kw):
        self.params = params(**kw)
        self.check_mode = check_mode
        self.calls = []

    def run_command(self, argv, **kwargs):
        self.calls.append(argv)
        return 0, "tool (PostgreSQL) 18.1\n", ""

    def get_bin_path(self, name, required=False):
        return "/usr/bin/" + name


@pytest.fixture
def bin_dir(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("pg_dump", "pg_restore", "pg_basebackup", "pg_verifybackup", "psql"):
        f = d / name
        f.write_text("#!/bin/sh\n")
        f.chmod(0o755)
    return str(d)


# ----------------------------------------------------------------------------- argv, table-driven

DUMP_CASES = [
    (dict(), "custom",
     ["pg_dump", "--format=custom", "--file=/b/x.partial", "--no-password"]),
    (dict(jobs=4), "directory",
     ["pg_dump", "--format=directory", "--file=/b/x.partial", "--no-password", "--jobs=4"]),
    (dict(compress="zstd"), "plain",
     ["pg_dump", "--format=plain", "--file=/b/x.partial", "--no-password", "--compress=zstd"]),
    (dict(tables=["public.users", "dialogs"], exclude_tables=["big*"], schemas=["public"],
          exclude_schemas=["audit"]), "custom",
     ["pg_dump", "--format=custom", "--file=/b/x.partial", "--no-password", "--table=public.users",
      "--table=dialogs", "--exclude-table=big*", "--schema=public", "--exclude-schema=audit"]),
]


@pytest.mark.parametrize("opts,fmt,expected", DUMP_CASES)
def test_dump_argv(opts, fmt, expected):
    p = params(**opts)
    assert dump_argv("pg_dump", "/b/x.partial", fmt, p) == expected
    assert all("s3cret-pw" not in a for a in expected)


def test_dump_argv_with_snapshot():
    argv = dump_argv("pg_dump", "/b/x.partial", "custom", params(), snapshot="00000003-0000001B-1")
    assert "--snapshot=00000003-0000001B-1" in argv


@pytest.mark.parametrize("opts,fmt,expected_tail", [
    (dict(), "tar", ["--format=t", "--wal-method=stream", "--checkpoint=fast", "--label=L", "--no-password"]),
    (dict(wal_method="fetch", checkpoint="spread"), "plain",
     ["--format=p", "--wal-method=fetch", "--checkpoint=spread", "--label=L", "--no-password"]),
    (dict(compress="gzip:5"), "tar",
     ["--format=t", "--wal-method=stream", "--checkpoint=fast", "--label=L", "--no-password", "--compress=gzip:5"]),
    (dict(compress="gzip:5"), "plain",
     ["--format=p", "--wal-method=stream", "--checkpoint=fast", "--label=L", "--no-password"]),
])
def test_basebackup_argv(opts, fmt, expected_tail):
    argv = basebackup_argv("pg_basebackup", "/b/base-x.partial", fmt, params(kind="physical", **opts), "L")
    assert argv == ["pg_basebackup", "--pgdata=/b/base-x.partial"] + expected_tail


@pytest.mark.parametrize("kind,fmt,expected", [
    ("logical", "custom", "chatai-L.dump"), ("logical", "directory", "chatai-L.dir"),
    ("logical", "plain", "chatai-L.sql"), ("physical", "tar", "base-L"), ("physical", "plain", "base-L")])
def test_backup_name(kind, fmt, expected):
    assert backup_name("chatai", kind, fmt, "L") == expected


@pytest.mark.parametrize("kind,fmt,expected", [("logical", None, "custom"), ("physical", None, "tar"),
                                               ("logical", "directory", "directory"), ("physical", "plain", "plain")])
def test_resolve_format(kind, fmt, expected):
    assert resolve_format(params(kind=kind, format=fmt)) == expected


@pytest.mark.parametrize("opts,reason", [
    (dict(kind="logical", format="tar"), "format tar is for physical backups"),
    (dict(kind="physical", format="custom"), "format custom is for logical backups"),
])
def test_resolve_format_refuses_wrong_kind(opts, reason):
    with pytest.raises(InputError) as err:
        resolve_format(params(**opts))
    assert reason in err.value.msg and err.value.msg.startswith("Failed to plan backup: ")


@pytest.mark.parametrize("opts,fmt,reason", [
    (dict(label="../etc"), "custom", "label"),
    (dict(jobs=0), "custom", "jobs must be at least 1"),
    (dict(jobs=2), "custom", "jobs > 1 needs"),
    (dict(kind="physical", tables=["users"]), "tar", "tables applies to logical backups only"),
    (dict(keep_last=0), "custom", "keep_last must be at least 1"),
    (dict(max_age_days=0), "custom", "max_age_days must be positive"),
])
def test_validate(opts, fmt, reason):
    with pytest.raises(InputError) as err:
        validate(params(**opts), fmt)
    assert reason in err.value.msg


@pytest.mark.parametrize("stderr,bad", [
    ("", None),
    ("pg_dump: warning: there are circular foreign-key constraints\n", None),
    ("pg_dump: error: query failed: server closed the connection unexpectedly\n", "pg_dump: error: query failed"),
    ("pg_dump: FATAL: terminating connection\n", "pg_dump: FATAL: terminating connection"),
    ("psql:f.sql:12: ERROR:  relation exists\n", "psql:f.sql:12: ERROR:  relation exists"),
    ("NOTICE:  extension \"vector\" already exists, skipping\n", None),
])
def test_stderr_failure(stderr, bad):
    found = stderr_failure(stderr)
    assert (found is None) if bad is None else found.startswith(bad)


# ----------------------------------------------------------------------------- TOC, WAL arithmetic

def test_parse_toc_tables_and_extensions():
    with open(os.path.join(FIXTURES, "chatai.toc")) as fh:
        entries = parse_toc(fh.read())
    assert toc_tables(entries) == ["public.alembic_version", "public.users", "public.dialogs",
                                   "public.dialog_messages"]
    assert toc_extensions(entries) == ["vector"]
    types = set(e["type"] for e in entries)
    assert {"FK CONSTRAINT", "SEQUENCE OWNED BY", "SEQUENCE SET", "CONSTRAINT", "INDEX", "DEFAULT"} <= types


def test_parse_backup_label():
    text = ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000080\n"
            "BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-01-31 03:12:45 UTC\n"
            "LABEL: base-x\nSTART TIMELINE: 1\n")
    assert parse_backup_label(text) == dict(start_lsn="0/2000028", start_wal_file="000000010000000000000002",
                                            checkpoint_lsn="0/2000080", start_time_server="2026-01-31 03:12:45 UTC",
                                            backup_label="base-x", timeline=1)


@pytest.mark.parametrize("tli,lsn,segsize,expected", [
    (1, "0/2000028", 16 * 1024 * 1024, "000000010000000000000002"),
    (2, "1/FF000000", 16 * 1024 * 1024, "0000000200000001000000FF"),
    (1, "0/40000000", 64 * 1024 * 1024, "000000010000000000000010"),
])
def test_wal_file_name(tli, lsn, segsize, expected):
    assert wal_file_name(tli, lsn, segsize) == expected


# ----------------------------------------------------------------------------- retention

NOW = datetime.datetime(2026, 2, 1, 0, 0, tzinfo=datetime.timezone.utc)


def m(name, day, verified=True):
    return dict(name=name, created="2026-01-%02dT00:00:00Z" % day, verified=verified)


@pytest.mark.parametrize("keep_last,max_age,manifests,protected,expected", [
    (None, None, [m("a", 1), m("b", 2)], (), []),
    (2, None, [m("a", 1), m("b", 2), m("c", 3), m("d", 4)], (), ["a", "b"]),
    (1, None, [m("a", 1), m("b", 2), m("c", 3)], ("c",), ["a", "b"]),
    # The newest *verified* backup survives even when keep_last would drop it.
    (1, None, [m("a", 1), m("b", 2), m("c", 3, verified=False)], (), ["a"]),
    (None, 10, [m("a", 1), m("b", 20), m("c", 30)], (), ["a", "b"]),
    (None, 10, [m("a", 1), m("b", 25), m("c", 30)], (), ["a"]),
    # Everything too old: the newest verified one still stays.
    (None, 1, [m("a", 1), m("b", 2), m("c", 3)], (), ["a", "b"]),
    (None, 1, [m("a", 1), m("b", 2), m("c", 3)], ("new",), ["a", "b"]),
    (3, 10, [m("a", 1), m("b", 25), m("c", 26)], (), ["a"]),
])
def test_select_for_deletion(keep_last, max_age, manifests, protected, expected):
    doomed = select_for_deletion(manifests, keep_last, max_age, now=NOW, protected=protected)
    assert [d["name"] for d in doomed] == expected


# ----------------------------------------------------------------------------- idempotence, check mode

def _labelled(tmp_path, content=b"PGDMP"):
    path = tmp_path / "chatai-pre.dump"
    path.write_bytes(content)
    write_manifest(str(path), dict(name=path.name, path=str(path), kind="logical", format="custom",
                                   database="chatai", created="2026-01-01T00:00:00Z",
                                   sha256=hashlib.sha256(content).hexdigest()))
    return path


def test_existing_verified_label_is_unchanged_and_runs_nothing(tmp_path, bin_dir):
    _labelled(tmp_path)
    module = FakeModule(dest=str(tmp_path), label="pre", pg_bin_dir=bin_dir)
    result = Backup(module).run()
    assert result["changed"] is False and result["commands"] == [] and result["backup"]["verified"] is True
    assert module.calls == []


def test_existing_label_that_no_longer_verifies_is_refused(tmp_path, bin_dir):
    path = _labelled(tmp_path)
    path.write_bytes(b"PGDMP-altered")
    with pytest.raises(SafetyRefusal) as err:
        Backup(FakeModule(dest=str(tmp_path), label="pre", pg_bin_dir=bin_dir)).run()
    assert err.value.msg.startswith("Failed to back up database chatai: a backup labelled pre exists but does not")


def test_label_without_manifest_is_refused(tmp_path, bin_dir):
    (tmp_path / "chatai-pre.dump").write_bytes(b"x")
    with pytest.raises(SafetyRefusal):
        Backup(FakeModule(dest=str(tmp_path), label="pre", pg_bin_dir=bin_dir)).run()


class FakeConn(object):
    def close(self):
        pass


def test_check_mode_plans_exact_commands_and_writes_nothing(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: FakeConn())
    dest = tmp_path / "new" / "dir"
    module = FakeModule(check_mode=True, dest=str(dest), label="plan", format="directory", jobs=4,
                        pg_bin_dir=bin_dir, tables=["users"])
    result = Backup(module).run()
    partial = str(dest / "chatai-plan.dir.partial")
    assert result["changed"] is True
    assert result["commands"] == [
        [os.path.join(bin_dir, "pg_dump"), "--format=directory", "--file=" + partial, "--no-password", "--jobs=4",
         "--snapshot=" + _backup.SNAPSHOT_PLACEHOLDER, "--table=users"],
        [os.path.join(bin_dir, "pg_restore"), "--list", partial]]
    assert not dest.exists() and module.calls == []


def test_check_mode_physical_plan(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: FakeConn())
    module = FakeModule(check_mode=True, dest=str(tmp_path), label="b1", kind="physical", pg_bin_dir=bin_dir)
    result = Backup(module).run()
    assert result["commands"][0][:2] == [os.path.join(bin_dir, "pg_basebackup"),
                                         "--pgdata=" + str(tmp_path / "base-b1.partial")]
    assert result["commands"][1][0].endswith("pg_verifybackup")
    assert os.listdir(str(tmp_path)) == ["bin"]


def test_check_mode_reports_retention_without_deleting(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: FakeConn())
    old = _labelled(tmp_path)
    newer = tmp_path / "chatai-newer.dump"
    newer.write_bytes(b"N")
    write_manifest(str(newer), dict(name=newer.name, path=str(newer), kind="logical", format="custom",
                                    database="chatai", created="2026-01-02T00:00:00Z",
                                    sha256=hashlib.sha256(b"N").hexdigest()))
    result = Backup(FakeModule(check_mode=True, dest=str(tmp_path), keep_last=1, pg_bin_dir=bin_dir)).run()
    assert result["deleted"] == [str(old)]
    assert old.exists()


def test_destination_that_is_a_file_is_refused(tmp_path, bin_dir):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError) as err:
        Backup(FakeModule(dest=str(f), pg_bin_dir=bin_dir)).run()
    assert "is not a directory" in err.value.msg


# ----------------------------------------------------------------------------- the dump read once

class DumpingModule(FakeModule):
    """pg_dump writes a directory archive; pg_restore --list lists it."""

    TOC = "; Archive created\n3001; 1259 16390 TABLE DATA public users chatai\n"

    def run_command(self, argv, **kwargs):
        self.calls.append(argv)
        if os.path.basename(argv[0]) == "pg_dump" and "--version" not in argv:
            out = [a for a in argv if a.startswith("--file=")][0][len("--file="):]
            os.mkdir(out, 0o700)
            for name, size in (("toc.dat", 2048), ("3001.dat", 3 * 1024 * 1024 + 7), ("3002.dat", 0)):
                with open(os.path.join(out, name), "wb") as fh:
                    fh.write(os.urandom(size))
                os.chmod(os.path.join(out, name), 0o644)
            return 0, "", ""
        if os.path.basename(argv[0]) == "pg_restore":
            return 0, self.TOC, ""
        return 0, "pg_dump (PostgreSQL) 18.1\n", ""


class FakeCursor(object):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def execute(self, query, *a):
        self.query = query

    def fetchone(self):
        return ("18.1", 180001, 16777216, False)


class SnapshotConn(FakeConn):
    def cursor(self):
        return FakeCursor()

    def rollback(self):
        pass


def test_directory_backup_hashes_every_file_once_into_the_manifest(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: SnapshotConn())
    module = DumpingModule(dest=str(tmp_path / "b"), label="x", format="directory", jobs=2, pg_bin_dir=bin_dir,
                           row_counts="none")
    result = Backup(module).run()
    m = result["backup"]
    path = tmp_path / "b" / "chatai-x.dir"
    assert m["sha256_scheme"] == "files" and sorted(m["files"]) == sorted(os.listdir(str(path)))
    for rel, entry in m["files"].items():
        data = (path / rel).read_bytes()
        assert entry == dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        assert oct((path / rel).stat().st_mode & 0o777) == "0o600"
    assert m["tables"] == {"public.users": None} and m["verified"] is True
    assert set(result["timings"]) >= {"dump_s", "verify_s", "checksum_s", "checksum_wait_s", "total_s"}
    assert not os.path.exists(str(path) + ".partial")


def test_a_failed_hash_leaves_no_backup_that_looks_complete(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: SnapshotConn())

    def broken(root, file_mode=None, threads=None):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(_backup, "hash_files", broken)
    dest = tmp_path / "b"
    module = DumpingModule(dest=str(dest), label="x", format="directory", jobs=2, pg_bin_dir=bin_dir,
                           row_counts="none")
    with pytest.raises(OSError):
        Backup(module).run()
    assert os.listdir(str(dest)) == []  # no partial, no backup, no manifest


def test_a_failed_verification_waits_for_the_hash_then_removes_the_partial(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setattr(_backup, "connect", lambda *a, **k: SnapshotConn())
    DumpingModule.TOC, saved = "", DumpingModule.TOC
    try:
        dest = tmp_path / "b"
        module = DumpingModule(dest=str(dest), label="x", format="directory", jobs=2, pg_bin_dir=bin_dir,
                               row_counts="none")
        with pytest.raises(_backup.CommandFailure) as err:
            Backup(module).run()
        assert "found no entries" in err.value.reason
        assert os.listdir(str(dest)) == []
    finally:
        DumpingModule.TOC = saved
