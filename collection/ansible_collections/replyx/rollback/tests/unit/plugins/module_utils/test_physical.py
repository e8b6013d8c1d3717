# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_physical: the delta decision, the backup index of a tar/plain backup, the row count comparison, the
end-of-archive target."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _physical as ph
from ansible_collections.replyx.rollback.plugins.module_utils import _pitr as p
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal


def sha(data):
    return hashlib.sha256(data).hexdigest()


def f(data):
    return dict(kind="file", size=len(data), sha256=sha(data))


D = dict(kind="dir")


def have(data):
    return dict(kind="file", size=len(data))


# ----------------------------------------------------------------------------- copy_reason

@pytest.mark.parametrize("want,current,on_disk,full,reason", [
    (f(b"abc"), None, None, False, "missing"),
    (f(b"abc"), D, None, False, "type"),
    (f(b"abc"), have(b"abcd"), b"abcd", False, "size"),
    (f(b"abc"), have(b"abd"), b"abd", False, "checksum"),
    (f(b"abc"), have(b"abc"), b"abc", False, None),
    (f(b"abc"), have(b"abc"), b"abc", True, "full"),
    (dict(kind="link", target="/x"), dict(kind="link", target="/x"), None, False, None),
    (dict(kind="link", target="/x"), dict(kind="link", target="/y"), None, False, "link target"),
])
def test_copy_reason(want, current, on_disk, full, reason):
    calls = []

    def checksum_of(rel):
        calls.append(rel)
        return sha(on_disk)

    assert ph.copy_reason(want, current, checksum_of, "base/1/2", full=full) == reason
    # The file is only read when kind and size agree (and not in full mode).
    expect_read = reason in ("checksum", None) and want["kind"] == "file" and not full
    assert calls == (["base/1/2"] if expect_read else [])


# ----------------------------------------------------------------------------- delta_plan

BACKUP = {
    "PG_VERSION": f(b"18\n"),
    "backup_label": f(b"START WAL LOCATION"),
    "base": D,
    "base/5": D,
    "base/5/1259": f(b"catalog"),
    "base/5/16384": f(b"users-table"),
    "base/5/16390": f(b"messages-table"),
    "global": D,
    "global/pg_control": f(b"control-old"),
    "pg_wal": D,
    "pg_wal/000000010000000000000002": f(b"wal2"),
}


def disk_of(files):
    def checksum_of(rel):
        return sha(files[rel])
    return checksum_of


@pytest.mark.parametrize("name,files,dirs,copy,remove,mkdir", [
    ("identical but for the label", {"PG_VERSION": b"18\n", "base/5/1259": b"catalog", "base/5/16384": b"users-table",
                                     "base/5/16390": b"messages-table", "global/pg_control": b"control-old",
                                     "pg_wal/000000010000000000000002": b"wal2"},
     ["base", "base/5", "global", "pg_wal"],
     [("backup_label", "missing")], [], []),
    ("one table damaged, control file newer, WAL recycled, a new relation",
     {"PG_VERSION": b"18\n", "base/5/1259": b"catalog", "base/5/16384": b"XXXXX-table",
      "base/5/16390": b"messages-table", "base/5/16999": b"new", "global/pg_control": b"control-new",
      "pg_wal/000000010000000000000009": b"wal9", "postmaster.pid": b"1"},
     ["base", "base/5", "global", "pg_wal"],
     [("backup_label", "missing"), ("base/5/16384", "checksum"), ("global/pg_control", "checksum"),
      ("pg_wal/000000010000000000000002", "missing")],
     ["base/5/16999", "pg_wal/000000010000000000000009", "postmaster.pid"], []),
    ("a dropped database directory and a truncated file",
     {"PG_VERSION": b"18\n", "base/5/1259": b"cat", "global/pg_control": b"control-old",
      "pg_wal/000000010000000000000002": b"wal2"},
     ["global", "pg_wal"],
     [("backup_label", "missing"), ("base/5/1259", "size"), ("base/5/16384", "missing"),
      ("base/5/16390", "missing")],
     [], ["base", "base/5"]),
    ("a directory the backup does not have goes with its content, listed once",
     {"PG_VERSION": b"18\n", "backup_label": b"START WAL LOCATION", "base/5/1259": b"catalog",
      "base/5/16384": b"users-table", "base/5/16390": b"messages-table", "global/pg_control": b"control-old",
      "pg_wal/000000010000000000000002": b"wal2", "base/77/1": b"x", "base/77/2": b"y"},
     ["base", "base/5", "base/77", "global", "pg_wal"],
     [], ["base/77"], []),
    ("a file where the backup has a directory",
     {"PG_VERSION": b"18\n", "backup_label": b"START WAL LOCATION", "base/5/1259": b"catalog",
      "base/5/16384": b"users-table", "base/5/16390": b"messages-table", "global/pg_control": b"control-old",
      "pg_wal": b"not a dir"},
     ["base", "base/5", "global"],
     [("pg_wal/000000010000000000000002", "missing")], ["pg_wal"], ["pg_wal"]),
])
def test_delta_plan(name, files, dirs, copy, remove, mkdir):
    current = dict((rel, have(data)) for rel, data in files.items())
    current.update((rel, D) for rel in dirs)
    plan = ph.delta_plan(BACKUP, current, disk_of(files))
    assert plan["copy"] == copy, name
    assert plan["remove"] == remove, name
    assert plan["mkdir"] == mkdir, name
    copied = set(r for r, _reason in copy)
    assert set(plan["skip"]) == set(r for r, e in BACKUP.items() if e["kind"] == "file") - copied, name


def test_delta_plan_full_copies_every_file_and_still_removes():
    files = {"PG_VERSION": b"18\n", "extra": b"1"}
    current = dict((rel, have(data)) for rel, data in files.items())
    plan = ph.delta_plan(BACKUP, current, disk_of(files), full=True)
    assert [r for r, _reason in plan["copy"]] == sorted(r for r, e in BACKUP.items() if e["kind"] == "file")
    assert set(reason for _rel, reason in plan["copy"]) == {"full"}
    assert plan["remove"] == ["extra"] and plan["skip"] == []


def test_delta_summary_counts():
    files = {"PG_VERSION": b"18\n", "base/5/1259": b"catalog", "base/5/16384": b"users-table",
             "base/5/16390": b"messages-table", "global/pg_control": b"control-new", "junk": b"j"}
    current = dict((rel, have(data)) for rel, data in files.items())
    current.update((rel, D) for rel in ("base", "base/5", "global"))
    plan = ph.delta_plan(BACKUP, current, disk_of(files))
    summary = ph.delta_summary(plan, BACKUP)
    assert summary["mode"] == "delta" and summary["files_in_backup"] == 7
    assert (summary["copied"], summary["skipped"], summary["removed"]) == (3, 4, 1)
    assert summary["reasons"] == {"missing": 2, "checksum": 1}
    assert summary["directories_created"] == 1  # pg_wal
    assert summary["bytes_copied"] == len(b"START WAL LOCATION") + len(b"control-old") + len(b"wal2")
    assert summary["copied_files"][0] == "backup_label (missing)" and summary["removed_files"] == ["junk"]


# ----------------------------------------------------------------------------- index, scan, apply (real files)

def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_index_of_a_tar_backup_and_apply(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    _tar(str(backup / "base.tar"), [("base", None), ("base/5", None), ("base/5/1", b"one"), ("PG_VERSION", b"18\n"),
                                    ("pg_wal", None)])
    _tar(str(backup / "pg_wal.tar"), [("000000010000000000000002", b"wal")])
    info = dict(layout="tar", base_tar=str(backup / "base.tar"), wal_tar=str(backup / "pg_wal.tar"))
    index = ph.backup_index(info)
    assert index["base/5/1"]["sha256"] == sha(b"one") and index["base/5/1"]["size"] == 3
    assert index["pg_wal/000000010000000000000002"]["sha256"] == sha(b"wal")
    assert index["base"] == {"kind": "dir"}

    data = tmp_path / "data"
    (data / "base" / "5").mkdir(parents=True)
    (data / "base" / "5" / "1").write_bytes(b"ONE")
    (data / "PG_VERSION").write_bytes(b"18\n")
    (data / "stale").write_bytes(b"x")
    plan = ph.delta_plan(index, ph.scan_data_dir(str(data)), lambda rel: ph.file_sha256(str(data / rel)))
    assert [r for r, _reason in plan["copy"]] == ["base/5/1", "pg_wal/000000010000000000000002"]
    ph.apply_delta(str(data), index, plan)
    assert (data / "base" / "5" / "1").read_bytes() == b"one"
    assert (data / "pg_wal" / "000000010000000000000002").read_bytes() == b"wal"
    assert not (data / "stale").exists()
    assert oct((data / "base" / "5" / "1").stat().st_mode & 0o777) == "0o600"
    # A second pass finds nothing to do.
    again = ph.delta_plan(index, ph.scan_data_dir(str(data)), lambda rel: ph.file_sha256(str(data / rel)))
    assert again["copy"] == [] and again["remove"] == [] and again["mkdir"] == []


def test_index_of_a_plain_backup_leaves_out_backup_manifest(tmp_path):
    root = tmp_path / "plain"
    (root / "global").mkdir(parents=True)
    (root / "global" / "pg_control").write_bytes(b"c")
    (root / "backup_manifest").write_text("{}")
    os.symlink("/elsewhere", str(root / "pg_wal"))
    index = ph.backup_index(dict(layout="plain", path=str(root)))
    assert set(index) == {"global", "global/pg_control", "pg_wal"}
    assert index["pg_wal"] == {"kind": "link", "target": "/elsewhere"}
    assert index["global/pg_control"]["source"] == str(root / "global" / "pg_control")


def test_unreadable_tar_is_an_input_error(tmp_path):
    bad = tmp_path / "base.tar.lz4"
    bad.write_bytes(b"not a tar")
    with pytest.raises(InputError) as err:
        ph.backup_index(dict(layout="tar", base_tar=str(bad), wal_tar=None))
    assert "only uncompressed or gzip" in err.value.msg


# ----------------------------------------------------------------------------- row counts

@pytest.mark.parametrize("before,after,changes", [
    ({"d.public.a": 1}, {"d.public.a": 1}, {}),
    ({"d.public.a": 1}, {"d.public.a": 5}, {"d.public.a": {"before": 1, "after": 5}}),
    ({}, {"d.public.a": 5}, {"d.public.a": {"before": None, "after": 5}}),
    ({"d.public.a": 5}, {}, {"d.public.a": {"before": 5, "after": None}}),
    (None, {"d.public.a": 5}, None),
    ({"d.public.a": 5}, None, None),
])
def test_compare_counts(before, after, changes):
    assert ph.compare_counts(before, after) == changes


# ----------------------------------------------------------------------------- the end of the archive as a target

WINDOW = dict(start_lsn=0x2000120, start_time=None, end_lsn=0x5000060, end_time=None, gap=None,
              last_segment="000000010000000000000005")


def test_end_target_without_gap():
    text = p.check_target("end", None, WINDOW, dict(path="/b"), None)
    assert text == "at the end of the archived WAL (last record 0/05000060 in 000000010000000000000005)"


def test_end_target_refused_with_a_gap():
    window = dict(WINDOW, gap="000000010000000000000006")
    with pytest.raises(SafetyRefusal) as err:
        p.check_target("end", None, window, dict(path="/b"), None)
    assert err.value.msg.startswith("Failed to verify WAL continuity:")
    assert "000000010000000000000006 is missing" in err.value.msg


def test_end_target_settings_have_no_target_and_no_action():
    settings = dict(p.recovery_settings(dict(target_action="promote"), "end", None, "/srv/wal"))
    assert not [k for k in settings if k.startswith("recovery_target") and k != "recovery_target_timeline"]
    assert settings["restore_command"] == "cp /srv/wal/%f %p" and settings["archive_mode"] == "off"
    assert p.describe_target("end", None) == "the end of the archived WAL"


class FakeModule(object):
    check_mode = False

    def __init__(self, **params):
        self.params = dict(data_dir="/srv/pg/data", target_action="promote", delta=True, forensic_copy=True)
        self.params.update(params)


@pytest.mark.parametrize("params,kind", [
    ({}, "end"),
    ({"target_lsn": "0/3000148"}, "lsn"),
    ({"target_name": "before_release"}, "name"),
    ({"target_immediate": True}, "immediate"),
])
def test_target_is_optional(params, kind):
    assert ph.PhysicalRestore(FakeModule(**params)).target()[0] == kind


@pytest.mark.parametrize("params,words", [
    ({"target_action": "pause"}, "target_action=pause needs a recovery target"),
    ({"target_lsn": "0/1", "target_name": "x"}, "give exactly one of"),
])
def test_target_refused(params, words):
    with pytest.raises(InputError) as err:
        ph.PhysicalRestore(FakeModule(**params)).target()
    assert words in err.value.msg


def test_server_log_and_confirm_text():
    restore = ph.PhysicalRestore(FakeModule(forensic_copy=False))
    assert restore.server_log.startswith("/srv/pg/data/log/replyx-restore-")
    assert "forensic_copy=false: no copy is kept" in restore._confirm_text()
