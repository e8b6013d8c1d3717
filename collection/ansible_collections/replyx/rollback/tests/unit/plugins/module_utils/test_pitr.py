# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_pitr: LSN/time/segment arithmetic, the archive, timelines, continuity, the window and the settings."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _pitr as p
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal

SEG = 16 * 1024 * 1024
UTC = datetime.timezone.utc


def t(text):
    return p.parse_time(text)


# ----------------------------------------------------------------------------- arithmetic

@pytest.mark.parametrize("text,value", [("0/0", 0), ("0/3000148", 0x3000148), ("1/0", 1 << 32),
                                        ("A/FFFFFFFF", (10 << 32) | 0xFFFFFFFF), ("0/03006D38", 0x3006D38)])
def test_lsn_round_trip(text, value):
    assert p.parse_lsn(text) == value
    assert p.parse_lsn(p.format_lsn(value)) == value


@pytest.mark.parametrize("bad", ["", "0x3000", "0/", "G/1", "1/2/3", None])
def test_lsn_refused(bad):
    with pytest.raises(InputError) as err:
        p.parse_lsn(bad, "target_lsn")
    assert err.value.msg.startswith("Failed to parse target_lsn:")


@pytest.mark.parametrize("text,expected", [
    ("2026-01-31 03:12:45.123456+00", datetime.datetime(2026, 1, 31, 3, 12, 45, 123456, UTC)),
    ("2026-01-31 03:12:45.5+00", datetime.datetime(2026, 1, 31, 3, 12, 45, 500000, UTC)),
    ("2026-01-31T05:12:45+02:00", datetime.datetime(2026, 1, 31, 3, 12, 45, 0, UTC)),
    ("2026-01-31 01:12:45-0200", datetime.datetime(2026, 1, 31, 3, 12, 45, 0, UTC)),
    ("2026-01-31 03:12:45 UTC", datetime.datetime(2026, 1, 31, 3, 12, 45, 0, UTC)),
    ("2026-01-31T03:12:45Z", datetime.datetime(2026, 1, 31, 3, 12, 45, 0, UTC)),
])
def test_time_parsing(text, expected):
    assert t(text) == expected


def test_time_without_zone_is_refused():
    with pytest.raises(InputError) as err:
        t("2026-01-31 03:12:45")
    assert "no time zone" in err.value.msg
    with pytest.raises(InputError):
        t("yesterday")


@pytest.mark.parametrize("seg_size", [SEG, 64 * 1024 * 1024, 1024 * 1024])
def test_segment_names_round_trip(seg_size):
    for segno in (0, 1, 255, 256, 4095, 123456):
        name = p.segment_name(3, segno, seg_size)
        assert len(name) == 24 and p.parse_segment_name(name, seg_size) == (3, segno)
    assert p.segment_name(1, 0x3006D38 // SEG, SEG) == "000000010000000000000003"
    assert p.segment_name(1, (1 << 32) // SEG, SEG) == "000000010000000100000000"


# ----------------------------------------------------------------------------- archive, timelines, continuity

def make_archive(path, segments, histories=None, backup=None):
    os.makedirs(str(path), exist_ok=True)
    for tli, segno in segments:
        with open(os.path.join(str(path), p.segment_name(tli, segno, SEG)), "wb") as fh:
            fh.truncate(SEG)
    for tli, text in (histories or {}).items():
        with open(os.path.join(str(path), "%08X.history" % tli), "w") as fh:
            fh.write(text)
    if backup:
        name, text = backup
        with open(os.path.join(str(path), name), "w") as fh:
            fh.write(text)
    return p.WalArchive(str(path))


def test_archive_reads_segments_histories_and_backup_history(tmp_path):
    archive = make_archive(tmp_path, [(1, 2), (1, 3)], backup=(
        "000000010000000000000002.00000028.backup",
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000120 (file x)\n"
        "STOP TIME: 2026-01-31 03:00:01 UTC\n"))
    assert archive.seg_size == SEG and archive.segments == {(1, 2), (1, 3)}
    history = archive.backup_history(1, 0x2000028)
    assert history["STOP TIME"] == "2026-01-31 03:00:01 UTC" and history["file"].endswith(".backup")
    assert archive.backup_history(1, 0x2000030) == {}


def test_archive_refuses_mixed_sizes(tmp_path):
    make_archive(tmp_path, [(1, 2)])
    with open(str(tmp_path / "000000010000000000000003"), "wb") as fh:
        fh.write(b"gz")
    with pytest.raises(InputError) as err:
        p.WalArchive(str(tmp_path))
    assert "compressed or partial" in err.value.msg


def test_timeline_chain_follows_history(tmp_path):
    archive = make_archive(tmp_path, [(1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5)], histories={
        2: "1\t0/3006F50\tbefore 2026-01-31\n",
        3: "1\t0/3006F50\tno reason\n2\t0/4000100\tno reason\n"})
    assert p.choose_timeline(archive, "latest", 1) == 3
    assert p.choose_timeline(archive, "current", 1) == 1
    assert p.choose_timeline(archive, "2", 1) == 2
    chain = p.timeline_chain(archive, 3, 1, 0x2000120)
    assert chain == [(1, 0, 0x3006F50), (2, 0x3006F50, 0x4000100), (3, 0x4000100, None)]
    assert [p.expected_tli(chain, s, SEG) for s in (2, 3, 4, 5)] == [1, 2, 3, 3]
    segments, missing, beyond = p.contiguous_segments(archive, chain, 2)
    assert segments == [(1, 2), (2, 3), (3, 4), (3, 5)] and missing is None and beyond is False
    assert p.pieces(segments) == [(1, 2, 2), (2, 3, 3), (3, 4, 5)]
    with pytest.raises(SafetyRefusal) as err:  # the backup ended after timeline 2 branched off
        p.timeline_chain(archive, 3, 1, 0x3007000)
    assert "branched off" in err.value.msg
    with pytest.raises(InputError):
        p.choose_timeline(archive, "newest", 1)


def test_contiguous_segments_reports_the_gap(tmp_path):
    archive = make_archive(tmp_path, [(1, 2), (1, 3), (1, 5), (1, 6)])
    chain = p.timeline_chain(archive, 1, 1, 0x2000120)
    segments, missing, beyond = p.contiguous_segments(archive, chain, 2)
    assert segments == [(1, 2), (1, 3)] and missing == "000000010000000000000004" and beyond is True
    segments, missing, beyond = p.contiguous_segments(archive, chain, 9)
    assert segments == [] and missing == "000000010000000000000009"


# ----------------------------------------------------------------------------- pg_waldump and the window

WALDUMP = """\
rmgr: Heap        len (rec/tot):     54/    54, tx:        755, lsn: 0/03006C90, prev 0/03006C58, desc: DELETE xmax: 755
rmgr: Transaction len (rec/tot):    473/   473, tx:        755, lsn: 0/03006D38, prev 0/03006D00, desc: COMMIT 2026-01-31 03:05:02.470717 UTC; rels: base/5/1
rmgr: Transaction len (rec/tot):     34/    34, tx:        756, lsn: 0/03006E00, prev 0/03006D38, desc: ABORT 2026-01-31 03:05:03 UTC
rmgr: XLOG        len (rec/tot):     98/    98, tx:          0, lsn: 0/03006E40, prev 0/03006E00, desc: RESTORE_POINT before release 42
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/03006F18, prev 0/03006E40, desc: SWITCH
"""


def test_parse_waldump():
    records = p.parse_waldump("pg_waldump: first record is after 0/3000000\n" + WALDUMP)
    assert [r["kind"] for r in records] == [None, "commit", "abort", "restore_point", None]
    assert records[1]["xid"] == 755 and records[1]["lsn"] == 0x3006D38
    assert records[1]["time"] == datetime.datetime(2026, 1, 31, 3, 5, 2, 470717, UTC)
    assert records[3]["name"] == "before release 42"


def rec(lsn, kind=None, time=None, xid=0, name=None):
    return dict(lsn=p.parse_lsn(lsn), kind=kind, time=t(time) if time else None, xid=xid, name=name,
                rmgr="Transaction" if kind in ("commit", "abort") else "XLOG", desc="")


# A backup from 0/2000028 to 0/2000120 and four segments of WAL after it.
WAL = {
    2: [rec("0/2000100", "commit", "2026-01-31 02:59:59.5+00", 700), rec("0/2000200", "commit", "2026-01-31 03:00:02+00", 701)],
    3: [rec("0/3000100", "commit", "2026-01-31 03:05:00+00", 710), rec("0/3000200", None)],
    4: [rec("0/4000100", "restore_point", name="rp1"), rec("0/4000180", "commit", "2026-01-31 03:10:00+00", 720)],
    5: [rec("0/5000100", "commit", "2026-01-31 03:20:00+00", 730), rec("0/5000200", None)],
}
BACKUP = dict(path="/b/base-1", name="base-1", start_lsn=0x2000028, stop_lsn=0x2000120, timeline=1, seg_size=SEG,
              stop_time=t("2026-01-31 03:00:01+00"))


def fake_scan(wal):
    def scan(tli, first, last, rmgr=None, xid=None):
        out = []
        for segno in range(first, last + 1):
            for r in wal.get(segno, []):
                if rmgr == "Transaction" and r["kind"] not in ("commit", "abort"):
                    continue
                if xid is not None and r["xid"] != xid:
                    continue
                out.append(r)
        return out
    return scan


def window(wal=None, segments=None, missing=None, beyond=False):
    wal = WAL if wal is None else wal
    chain = [(1, 0, None)]
    segments = segments or [(1, s) for s in sorted(wal)]
    return p.compute_window(BACKUP, chain, segments, missing, beyond, fake_scan(wal),
                            has=lambda tli, segno: segno in wal)


def find(wal=None):
    wal = WAL if wal is None else wal

    def finder(kind, value):
        for segno in sorted(wal):
            for r in wal[segno]:
                if kind == "xid" and r["kind"] in ("commit", "abort") and r["xid"] == value:
                    return r
                if kind == "name" and r["kind"] == "restore_point" and r["name"] == value:
                    return r
        return None
    return finder


def test_window_from_the_wal():
    w = window()
    assert w["start_time"] == t("2026-01-31 02:59:59.5+00")  # last commit before the stop LSN
    assert w["start_time_source"].startswith("last transaction before the backup's stop LSN")
    assert w["end_time"] == t("2026-01-31 03:20:00+00") and w["end_lsn"] == 0x5000200
    assert w["start_lsn"] == 0x2000120 and w["segment_count"] == 4 and w["gap"] is None
    public = p.public_window(w)
    assert public["start_lsn"] == "0/02000120" and public["end_time"] == "2026-01-31 03:20:00.000000+00"


def test_window_start_falls_back_to_older_wal_then_stop_time():
    wal = dict(WAL)
    wal[2] = [rec("0/2000200", "commit", "2026-01-31 03:00:02+00", 701)]
    wal[1] = [rec("0/1000100", "commit", "2026-01-31 02:00:00+00", 690)]
    w = p.compute_window(BACKUP, [(1, 0, None)], [(1, s) for s in (2, 3, 4, 5)], None, False, fake_scan(wal),
                         has=lambda tli, segno: segno in wal)
    assert w["start_time"] == t("2026-01-31 02:00:00+00") and "before the backup started" in w["start_time_source"]
    del wal[1]
    w = p.compute_window(BACKUP, [(1, 0, None)], [(1, s) for s in (2, 3, 4, 5)], None, False, fake_scan(wal),
                         has=lambda tli, segno: segno in wal)
    assert w["start_time"] == BACKUP["stop_time"] and "STOP TIME" in w["start_time_source"]


def test_window_refuses_incomplete_backup_wal():
    backup = dict(BACKUP, stop_lsn=0x3000010)
    with pytest.raises(SafetyRefusal) as err:
        p.compute_window(backup, [(1, 0, None)], [(1, 2)], "000000010000000000000003", False, fake_scan(WAL))
    assert "000000010000000000000003 is missing" in err.value.msg


@pytest.mark.parametrize("kind,value,ok,before_backup,text", [
    ("time", "2026-01-31 03:07:00+00", True, False, "before the first transaction committed after"),
    ("time", "2026-01-31 02:59:59.5+00", True, False, None),          # exactly the window start
    ("time", "2026-01-31 02:59:59.4+00", False, True, "before the end of base backup base-1"),
    ("time", "2026-01-31 03:20:00+00", False, False, "not before the newest transaction"),
    ("time", "2026-01-31 04:00:00+00", False, False, "pg_switch_wal"),
    ("lsn", "0/2000120", True, False, None),
    ("lsn", "0/2000100", False, True, "before the end of base backup"),
    ("lsn", "0/5000200", True, False, None),
    ("lsn", "0/5000201", False, False, "after the last archived WAL record"),
    ("xid", 720, True, False, "transaction 720 at LSN 0/04000180"),
    ("xid", 700, False, True, "before the end of base backup"),
    ("xid", 999, False, False, "transaction 999 is not in the archived WAL"),
    ("name", "rp1", True, False, "restore point 'rp1'"),
    ("name", "nope", False, False, "restore point 'nope' is not in the archived WAL"),
    ("immediate", True, True, False, "consistency point"),
])
def test_check_target(kind, value, ok, before_backup, text):
    value = t(value) if kind == "time" else (p.parse_lsn(value) if kind == "lsn" else value)
    w = window()
    if ok:
        stops = p.check_target(kind, value, w, BACKUP, find())
        assert text is None or text in stops
    else:
        with pytest.raises(p.OutsideWindow) as err:
            p.check_target(kind, value, w, BACKUP, find())
        assert err.value.before_backup is before_backup
        assert err.value.msg.startswith("Failed to check the recoverable window:")
        assert text in err.value.msg


def test_gap_before_the_target_is_a_continuity_failure():
    wal = dict((k, v) for k, v in WAL.items() if k in (2, 3))
    w = p.compute_window(BACKUP, [(1, 0, None)], [(1, 2), (1, 3)], "000000010000000000000004", True,
                         fake_scan(wal))
    assert w["gap"] == "000000010000000000000004"
    p.check_target("time", t("2026-01-31 03:01:00+00"), w, BACKUP, find(wal))  # before the gap: fine
    with pytest.raises(p.OutsideWindow) as err:
        p.check_target("time", t("2026-01-31 03:07:00+00"), w, BACKUP, find(wal))
    assert err.value.msg.startswith("Failed to verify WAL continuity:")
    assert "segment 000000010000000000000004 is missing" in err.value.msg


# ----------------------------------------------------------------------------- targets and settings

@pytest.mark.parametrize("given,expected", [
    (dict(target_time="2026-01-31 03:00:00+00"), ("time", t("2026-01-31 03:00:00+00"))),
    (dict(target_lsn="0/3000148"), ("lsn", 0x3000148)),
    (dict(target_xid="755"), ("xid", 755)),
    (dict(target_name="rp1"), ("name", "rp1")),
    (dict(target_immediate=True), ("immediate", True)),
])
def test_validate_target(given, expected):
    params = dict((k, None) for k in p.TARGET_KEYS)
    params["target_immediate"] = False
    params.update(given)
    assert p.validate_target(params) == expected


@pytest.mark.parametrize("given,text", [
    (dict(), "got none"),
    (dict(target_time="2026-01-31 03:00:00+00", target_lsn="0/1"), "got target_time, target_lsn"),
    (dict(target_name="a", target_immediate=True), "got target_name, target_immediate"),
])
def test_validate_target_needs_exactly_one(given, text):
    params = dict((k, None) for k in p.TARGET_KEYS)
    params.update(given)
    with pytest.raises(InputError) as err:
        p.validate_target(params)
    assert err.value.msg.startswith("Failed to validate the recovery target: give exactly one of")
    assert text in err.value.msg


def test_validate_target_xid_must_be_a_number():
    with pytest.raises(InputError):
        p.validate_target(dict(target_xid="12a"))


def test_recovery_settings_and_auto_conf():
    params = dict(target_inclusive=False, target_action="pause", target_timeline="latest", restored_archiving="off",
                  server_port=6543, listen_addresses="127.0.0.1")
    settings = p.recovery_settings(params, "time", t("2026-01-31 03:00:00.25+00"), "/srv/wal archive")
    assert settings == [
        ("restore_command", "cp '/srv/wal archive/%f' %p"),
        ("recovery_target_time", "2026-01-31 03:00:00.250000+00"),
        ("recovery_target_inclusive", "off"),
        ("recovery_target_action", "pause"),
        ("recovery_target_timeline", "latest"),
        ("archive_mode", "off"),
        ("port", "6543"),
        ("listen_addresses", "127.0.0.1"),
    ]
    keep = p.recovery_settings(dict(restored_archiving="keep"), "name", "it's", "/a")
    assert ("recovery_target_name", "it's") in keep and ("archive_mode", "off") not in keep
    assert ("recovery_target_inclusive", "on") not in keep  # not for restore points
    old = ("# Do not edit this file manually!\nwork_mem = '8MB'\nrecovery_target_name = 'old'\n"
           "primary_conninfo = 'host=x'\narchive_mode = 'on'\n")
    text = p.rewrite_auto_conf(old, keep + [("archive_mode", "off")], "header")
    assert "recovery_target_name = 'it''s'" in text and "'old'" not in text and "primary_conninfo" not in text
    assert "work_mem = '8MB'" in text and "archive_mode = 'on'" not in text and text.endswith("archive_mode = 'off'\n")


def test_parse_server_log():
    log = ("LOG:  starting point-in-time recovery to 2026-01-31 03:00:00+00\n"
           "LOG:  recovery stopping before commit of transaction 755, time 2026-01-31 03:05:02.470717+00\n"
           "LOG:  redo done at 0/3006C58 system usage: CPU\n"
           "LOG:  last completed transaction was at log time 2026-01-31 02:59:59.5+00\n"
           "LOG:  selected new timeline ID: 2\n")
    parsed = p.parse_server_log(log)
    assert parsed["recovery_stop"] == "recovery stopping before commit of transaction 755, time 2026-01-31 03:05:02.470717+00"
    assert parsed["new_timeline"] == 2 and parsed["redo_done_lsn"] == "0/3006C58"
    assert parsed["last_transaction_time"] == "2026-01-31 02:59:59.5+00"
    assert parsed["paused"] is False and parsed["shut_down"] is False
    assert p.parse_server_log("LOG:  pausing at the end of recovery\n")["paused"] is True
    assert p.parse_server_log("LOG:  shutdown at recovery target\n")["shut_down"] is True


def test_utc_stamp():
    assert p.utc_stamp(datetime.datetime(2026, 1, 31, 3, 4, 5, tzinfo=UTC)) == "20260131T030405Z"
