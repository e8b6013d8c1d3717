# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_archiving: judging pg_stat_archiver, and the WAL chain of the newest base backup."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _archiving as a
from ansible_collections.replyx.rollback.plugins.module_utils import _pitr as p

SEG = 16 * 1024 * 1024
NOW = datetime.datetime(2026, 1, 31, 3, 30, 0, tzinfo=datetime.timezone.utc)
HEALTHY = dict(archive_mode="on", in_recovery=False, archived_count=42, failed_count=0,
               last_archived_wal="000000010000000000000029", last_archived_time="2026-01-31T03:29:30+00:00",
               last_failed_wal=None, last_failed_time=None, stats_reset="2026-01-30T00:00:00+00:00",
               current_wal="00000001000000000000002A", wal_segment_size=SEG, ready_count=0, oldest_ready_time=None)


def state(**changes):
    out = dict(HEALTHY)
    out.update(changes)
    return out


@pytest.mark.parametrize("timeout,expected", [(60, 180), (0, 300), (None, 300), (10, 120), (300, 660)])
def test_default_max_age(timeout, expected):
    assert a.default_max_age(timeout) == expected


# (state changes, ok, texts every problem must contain (one list per problem), warning texts)
CASES = [
    ("healthy", {}, True, [], []),
    ("healthy, idle for hours: nothing waits", dict(last_archived_time="2026-01-30T20:00:00+00:00"), True, [], []),
    ("archive_mode off", dict(archive_mode="off"), False, [["archive_mode is off", "no point-in-time recovery"]], []),
    ("standby with archive_mode on", dict(in_recovery=True, failed_count=9, last_failed_time=NOW.isoformat()),
     True, [], ["in recovery"]),
    ("archive_mode always in recovery is judged", dict(archive_mode="always", in_recovery=True, failed_count=1,
                                                       last_failed_wal="00000001000000000000002A",
                                                       last_failed_time="2026-01-31T03:29:50+00:00"),
     False, [["archiving is failing", "00000001000000000000002A"]], []),
    ("last failure after the last success",
     dict(failed_count=3, last_failed_wal="00000001000000000000002A", last_failed_time="2026-01-31T03:29:55+00:00"),
     False, [["archiving is failing", "archive_command failed on 00000001000000000000002A",
              "3 failures", "the last success was 000000010000000000000029"]], []),
    ("failing and never archived anything",
     dict(archived_count=0, last_archived_wal=None, last_archived_time=None, failed_count=7,
          last_failed_wal="000000010000000000000001", last_failed_time="2026-01-31T03:29:55+00:00"),
     False, [["archiving is failing", "000000010000000000000001", "nothing has been archived since"]], []),
    ("failed once, recovered since",
     dict(failed_count=2, last_failed_wal="000000010000000000000020", last_failed_time="2026-01-31T01:00:00+00:00"),
     True, [], ["2 archiving failures", "000000010000000000000020", "succeeded since"]),
    ("segments waiting too long",
     dict(ready_count=5, oldest_ready_time="2026-01-31T03:20:00+00:00", last_archived_time="2026-01-31T03:19:00+00:00"),
     False, [["5 WAL segment(s) wait to be archived", "the oldest for 10 min", "archive_max_age_s 180"]], []),
    ("segments waiting, not too long", dict(ready_count=1, oldest_ready_time="2026-01-31T03:29:00+00:00"),
     True, [], []),
    ("failing and segments waiting: both named",
     dict(failed_count=40, last_failed_wal="00000001000000000000002A", last_failed_time="2026-01-31T03:29:59+00:00",
          ready_count=3, oldest_ready_time="2026-01-31T03:00:00+00:00"),
     False, [["archiving is failing"], ["3 WAL segment(s) wait"]], []),
    ("no archive_status access: segments between the last archived and the current one wait",
     dict(ready_count=None, last_archived_time="2026-01-31T03:00:00+00:00", current_wal="00000001000000000000002D"),
     False, [["the last archived segment 000000010000000000000029 is 30 min old", "3 finished segment(s) up to "
              "00000001000000000000002D wait"]], []),
    ("no archive_status access, old but nothing waits", dict(ready_count=None, last_archived_time="2026-01-30T03:00:00Z"),
     True, [], []),
    ("no archive_status access, across a log id boundary",
     dict(ready_count=None, last_archived_wal="0000000100000000000000FF", current_wal="000000010000000100000001",
          last_archived_time="2026-01-31T03:00:00+00:00"),
     False, [["1 finished segment(s)"]], []),
]


@pytest.mark.parametrize("changes,ok,problems,warnings", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_judge_archiver(changes, ok, problems, warnings):
    got_ok, got_problems, got_warnings = a.judge_archiver(state(**changes), NOW, 180)
    assert got_ok is ok
    assert len(got_problems) == len(problems), got_problems
    for texts, problem in zip(problems, got_problems):
        for text in texts:
            assert text in problem, problem
    for text in warnings:
        assert any(text in w for w in got_warnings), got_warnings


def test_judge_archiver_accepts_datetimes():
    ok, problems, _w = a.judge_archiver(state(ready_count=2, oldest_ready_time=NOW - datetime.timedelta(hours=3)),
                                        NOW, 180)
    assert not ok and "the oldest for 3.0 h" in problems[0]


# ----------------------------------------------------------------------------- the WAL chain

def make(tmp_path, segments, backups):
    """An archive holding ``segments`` (timeline 1) and a basebackup dir with one plain backup per (name, start, stop)."""
    archive, backups_dir = tmp_path / "wal archive", tmp_path / "basebackups"
    archive.mkdir()
    backups_dir.mkdir()
    for segno in segments:
        with open(str(archive / p.segment_name(1, segno, SEG)), "wb") as fh:
            fh.truncate(SEG)
    for name, start, stop in backups:
        path = backups_dir / name
        path.mkdir()
        (path / "PG_VERSION").write_text("18\n")
        manifest = dict(name=name, path=str(path), kind="physical", format="plain", sha256="0" * 64,
                        start_lsn=p.format_lsn(start * SEG + 0x28), stop_lsn=p.format_lsn(stop * SEG + 0x120),
                        timeline=1)
        (backups_dir / (name + ".manifest.json")).write_text(json.dumps(manifest))
    return str(backups_dir), str(archive)


def test_chain_complete(tmp_path):
    chain = a.wal_chain(*make(tmp_path, [2, 3, 4, 5, 6], [("old", 2, 2), ("new", 4, 5)]))
    assert chain["complete"] and chain["problems"] == [] and chain["backup"] == "new"
    assert chain["first_segment"] == "000000010000000000000004" and chain["stop_segment"] == "000000010000000000000005"
    assert chain["last_segment"] == "000000010000000000000006" and chain["missing"] is None


def test_chain_with_the_backups_own_wal_missing(tmp_path):
    chain = a.wal_chain(*make(tmp_path, [4, 6, 7], [("new", 4, 6)]))
    assert not chain["complete"] and chain["missing"] == "000000010000000000000005"
    assert "segment 000000010000000000000005 is missing" in chain["problems"][0]
    assert "the WAL of base backup new" in chain["problems"][0] and "cannot be restored" in chain["problems"][0]


def test_chain_with_the_first_segment_missing(tmp_path):
    chain = a.wal_chain(*make(tmp_path, [5, 6], [("new", 4, 5)]))
    assert not chain["complete"] and chain["missing"] == "000000010000000000000004"


def test_chain_with_a_gap_after_the_backup(tmp_path):
    chain = a.wal_chain(*make(tmp_path, [4, 5, 6, 8, 9], [("new", 4, 5)]))
    assert not chain["complete"] and chain["missing"] == "000000010000000000000007"
    assert "unbroken only up to 000000010000000000000006" in chain["problems"][0]


def test_chain_without_a_base_backup(tmp_path):
    backups_dir, archive = make(tmp_path, [1], [])
    chain = a.wal_chain(backups_dir, archive)
    assert chain["complete"] is None and chain["problems"] == [] and chain["backup"] is None


def test_chain_with_a_missing_archive_names_it(tmp_path):
    backups_dir, archive = make(tmp_path, [4], [("new", 4, 4)])
    chain = a.wal_chain(backups_dir, os.path.join(archive, "gone"))
    assert not chain["complete"] and "cannot be checked" in chain["problems"][0] and "gone" in chain["problems"][0]


def test_chain_before_the_first_base_backup(tmp_path):
    """The base backup directory is made by the first physical backup: before it, no base backup, no WAL problem
    (a fresh lab's triage and preflight report the missing backup on their own line)."""
    backups_dir, archive = make(tmp_path, [1], [])
    os.rmdir(backups_dir)
    chain = a.wal_chain(backups_dir, archive)
    assert chain["complete"] is None and chain["problems"] == [] and chain["backup"] is None


def test_chain_with_a_file_where_the_backup_directory_should_be(tmp_path):
    backups_dir, archive = make(tmp_path, [1], [])
    os.rmdir(backups_dir)
    with open(backups_dir, "w") as fh:
        fh.write("not a directory")
    chain = a.wal_chain(backups_dir, archive)
    assert chain["complete"] is False and "is not a directory" in chain["problems"][0]
