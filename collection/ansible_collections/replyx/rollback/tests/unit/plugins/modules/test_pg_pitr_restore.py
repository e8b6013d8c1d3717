# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_pitr_restore through main(): a fake archive and backup on disk, pg_waldump/pg_ctl faked at run_command.

Covers check mode (the plan, nothing changed), and the refusals that must come before any change.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tarfile

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _pitr as p
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import sha256_path, write_manifest
from ansible_collections.replyx.rollback.plugins.modules import pg_pitr_restore

SEG = 16 * 1024 * 1024
PASSWORD = "s3cr3t-pitr-pw"
WAL = {  # segment -> records (lsn, kind, xid, time or name)
    2: [("0/02000100", "COMMIT", 700, "2026-01-31 02:59:59.500000 UTC")],
    3: [("0/03000100", "COMMIT", 710, "2026-01-31 03:05:00.000000 UTC"),
        ("0/03000200", "RESTORE_POINT", 0, "rp1")],
    4: [("0/04000100", "COMMIT", 720, "2026-01-31 03:20:00.000000 UTC"), ("0/04000200", "SWITCH", 0, "")],
}


def waldump_lines(segnos, rmgr=None, xid=None):
    lines = []
    for segno in segnos:
        for lsn, kind, rec_xid, extra in WAL.get(segno, []):
            mgr = "Transaction" if kind == "COMMIT" else "XLOG"
            if rmgr and rmgr != mgr or xid is not None and int(xid) != rec_xid:
                continue
            desc = "%s %s" % (kind, extra) if extra else kind
            lines.append("rmgr: %-11s len (rec/tot):     34/    34, tx:        %d, lsn: %s, prev 0/00000000, "
                         "desc: %s" % (mgr, rec_xid, lsn, desc))
    return "\n".join(lines) + "\n"


class FakeTools(object):
    def __init__(self, running=True):
        self.running = running
        self.calls = []

    def __call__(self, args, environ_update=None, **_kwargs):
        self.calls.append(list(args))
        tool = os.path.basename([a for a in args if "/" in a and os.path.basename(a).startswith("pg_")][0])
        if tool == "pg_waldump":
            rmgr = args[args.index("--rmgr") + 1] if "--rmgr" in args else None
            xid = args[args.index("--xid") + 1] if "--xid" in args else None
            first, last = (p.parse_segment_name(n, SEG)[1] for n in args[-2:])
            return 0, waldump_lines(range(first, last + 1), rmgr, xid), ""
        if tool == "pg_ctl" and "--version" in args:
            return 0, "pg_ctl (PostgreSQL) 18.1\n", ""
        if tool == "pg_ctl" and "status" in args:
            return (0, "pg_ctl: server is running\n", "") if self.running else (3, "no server running\n", "")
        raise AssertionError("unexpected command %s" % args)


@pytest.fixture
def layout(tmp_path):
    """bin dir, archive (segments 2-4 of timeline 1), a tar base backup with manifests, a data dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pg_waldump", "pg_ctl", "pg_controldata"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / name).chmod(0o755)
    archive = tmp_path / "archive"
    archive.mkdir()
    for segno in (2, 3, 4):
        with open(str(archive / p.segment_name(1, segno, SEG)), "wb") as fh:
            fh.truncate(SEG)
    backups = tmp_path / "backups"
    backup = backups / "base-1"
    backup.mkdir(parents=True)
    (tmp_path / "PG_VERSION").write_text("18\n")
    with tarfile.open(str(backup / "base.tar"), "w") as tar:
        tar.add(str(tmp_path / "PG_VERSION"), arcname="PG_VERSION")
    (backup / "backup_manifest").write_text(json.dumps({
        "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000120"}],
        "Files": [{"Path": "PG_VERSION", "Size": 1000}]}))
    write_manifest(str(backup), dict(name="base-1", path=str(backup), kind="physical", format="tar",
                                     sha256=sha256_path(str(backup)), created="2026-01-31T03:00:01Z"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")
    (data / "postgresql.auto.conf").write_text("# keep me\n")
    return dict(tmp=tmp_path, bin=str(bin_dir), archive=str(archive), backups=str(backups), backup=str(backup),
                data=str(data))


def run(monkeypatch, capsys, layout, fake, check_mode=False, **params):
    (layout["tmp"] / "remote").mkdir(exist_ok=True)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, *a, **kw: fake(*a, **kw))
    args = dict(wal_archive=layout["archive"], data_dir=layout["data"], backup_dir=layout["backups"],
                pg_bin_dir=layout["bin"], login_password=PASSWORD, min_free_bytes=0,
                _ansible_check_mode=check_mode, _ansible_remote_tmp=str(layout["tmp"] / "remote"),
                _ansible_keep_remote_files=False)
    args.update(params)
    args = dict((k, v) for k, v in args.items() if v is not None)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            pg_pitr_restore.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result["_rc"] = exit_info.value.code
    result["_raw"] = out
    return result


def tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _s, fs in os.walk(path) for f in fs)


def test_check_mode_returns_the_plan_and_changes_nothing(monkeypatch, capsys, layout):
    before = (tree(str(layout["tmp"])), open(os.path.join(layout["data"], "postgresql.auto.conf")).read())
    fake = FakeTools(running=True)
    result = run(monkeypatch, capsys, layout, fake, check_mode=True, target_time="2026-01-31 03:06:00+00")
    assert result["_rc"] == 0, result
    assert result["changed"] is False
    assert result["base_backup"]["name"] == "base-1" and result["base_backup"]["verified"] is True
    assert result["base_backup"]["start_lsn"] == "0/02000028" and result["base_backup"]["layout"] == "tar"
    assert result["window"]["start_time"] == "2026-01-31 02:59:59.500000+00"
    assert result["window"]["end_time"] == "2026-01-31 03:20:00.000000+00"
    assert result["target"]["stops"].startswith("before the first transaction committed after")
    assert result["settings"] == {
        "restore_command": "cp %s/%%f %%p" % layout["archive"],
        "recovery_target_time": "2026-01-31 03:06:00.000000+00", "recovery_target_inclusive": "on",
        "recovery_target_action": "promote", "recovery_target_timeline": "latest", "archive_mode": "off"}
    assert result["server_running"] is True
    assert result["steps"][0].startswith("stop the server") and result["steps"][1].startswith("move ")
    assert result["forensic_copy"].startswith(os.path.join(str(layout["tmp"]), "data-"))
    assert "reached" not in result and "steps_done" not in result
    status = [c for c in fake.calls if "status" in c][0]
    if os.geteuid() == 0:
        assert status[0].endswith("runuser") and status[1:4] == ["-u", "postgres", "--"]
    assert not any(c for c in fake.calls if "stop" in c or "start" in c)
    assert PASSWORD not in result["_raw"]
    assert (tree(str(layout["tmp"])), open(os.path.join(layout["data"], "postgresql.auto.conf")).read()) == before


@pytest.mark.parametrize("params,text", [
    (dict(target_time="2026-01-31 03:06:00+00"), "Failed to restore data directory"),  # confirm missing
    (dict(target_time="2026-01-31 03:06:00+00", target_name="rp1", confirm=True),
     "Failed to validate the recovery target: give exactly one of"),
    (dict(target_time="2026-01-31 02:00:00+00", confirm=True), "Failed to choose a base backup: no verified base backup"),
    (dict(target_time="2026-01-31 03:30:00+00", confirm=True),
     "Failed to check the recoverable window: target time 2026-01-31 03:30:00.000000+00 is not before the newest"),
    (dict(target_lsn="0/4000201", confirm=True), "Failed to check the recoverable window: target LSN 0/04000201 is after"),
    (dict(target_name="rp2", confirm=True), "restore point 'rp2' is not in the archived WAL"),
    (dict(target_xid="710", base_backup="/nope/base-9", backup_dir=None, confirm=True),
     "Failed to load backup manifest /nope/base-9.manifest.json: the manifest does not exist"),
    (dict(target_time="2026-01-31 03:06:00", confirm=True), "Failed to parse target_time:"),
])
def test_refusals_change_nothing(monkeypatch, capsys, layout, params, text):
    before = tree(str(layout["tmp"]))
    fake = FakeTools()
    result = run(monkeypatch, capsys, layout, fake, **params)
    assert result["_rc"] == 1 and result["failed"] is True and result["changed"] is False
    assert text in result["msg"], result["msg"]
    assert not any(c for c in fake.calls if "stop" in c or "start" in c)
    assert tree(str(layout["tmp"])) == before


def test_missing_segment_and_checksum(monkeypatch, capsys, layout):
    os.unlink(os.path.join(layout["archive"], "000000010000000000000003"))
    result = run(monkeypatch, capsys, layout, FakeTools(), target_time="2026-01-31 03:06:00+00", confirm=True)
    assert result["failed"] and result["msg"].startswith("Failed to verify WAL continuity:")
    assert "segment 000000010000000000000003 is missing" in result["msg"]
    with open(os.path.join(layout["backup"], "base.tar"), "ab") as fh:
        fh.write(b"x")
    result = run(monkeypatch, capsys, layout, FakeTools(), target_time="2026-01-31 03:00:30+00", confirm=True,
                 base_backup=layout["backup"], backup_dir=None)
    assert result["failed"] and "checksum mismatch" in result["msg"]
    assert result["msg"].startswith("Failed to verify backup %s" % layout["backup"])


def test_version_mismatch_is_refused(monkeypatch, capsys, layout):
    fake = FakeTools()
    real = fake.__call__

    def old_tools(args, **kw):
        if "--version" in args:
            return 0, "pg_ctl (PostgreSQL) 15.8\n", ""
        return real(args, **kw)
    result = run(monkeypatch, capsys, layout, old_tools, target_time="2026-01-31 03:06:00+00", confirm=True)
    assert result["failed"] and result["msg"].startswith("Failed to check the PostgreSQL version:")
    assert "PostgreSQL 18" in result["msg"] and "PostgreSQL 15" in result["msg"]


def test_not_enough_space(monkeypatch, capsys, layout):
    result = run(monkeypatch, capsys, layout, FakeTools(), target_time="2026-01-31 03:06:00+00", confirm=True,
                 min_free_bytes=1 << 60)
    assert result["failed"] and result["msg"].startswith("Failed to check free disk space:")
