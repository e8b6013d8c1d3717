# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is WAL archiving working? Judged from pg_stat_archiver and the archive itself, never assumed.

Archiving can fail (a bad archive_command, a full or unwritable archive) while the server runs happily;
the failure only shows in ``pg_stat_archiver`` and in ``pg_wal/archive_status/*.ready`` piling up. These
pure functions turn that state into a list of problems, each naming what is wrong, so that triage,
preflight and backup.yml can fail loudly instead of the operator finding out during the incident.

- ``judge_archiver(state, now, max_age_s)``: archive_mode, the last failure against the last success,
  segments waiting longer than ``max_age_s``.
- ``wal_chain(backup_dir, archive_dir)``: whether the archive holds the newest base backup's WAL and an
  unbroken run after it (the WAL continuity code of ``_pitr``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError
from ansible_collections.replyx.rollback.plugins.module_utils import _pitr

UTC = datetime.timezone.utc


def default_max_age(archive_timeout_s):
    """How long a finished segment may wait for the archiver: two archive_timeouts plus a minute of slack
    (at least two minutes); five minutes when archive_timeout is off."""
    timeout = int(archive_timeout_s or 0)
    return max(2 * timeout + 60, 120) if timeout > 0 else 300


def _time(value):
    if value in (None, ""):
        return None
    return _pitr.parse_time(value.replace("T", " ") if isinstance(value, str) else value, "pg_stat_archiver time")


def _segno(name, seg_size):
    parsed = _pitr.parse_segment_name(name or "", seg_size)
    return parsed[1] if parsed else None


def _ago(seconds):
    seconds = int(seconds)
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    return "%.1f h" % (seconds / 3600.0)


def judge_archiver(state, now, max_age_s):
    """(ok, problems, warnings) of WAL archiving.

    ``state``: the ``wal_archiving`` dict of pg_status - archive_mode, archived_count, last_archived_wal,
    last_archived_time, failed_count, last_failed_wal, last_failed_time, stats_reset (times as datetimes
    or ISO text), plus in_recovery, current_wal (the segment being written), wal_segment_size (bytes),
    ready_count and oldest_ready_time (``.ready`` files in pg_wal/archive_status; None when unreadable).
    """
    problems, warnings = [], []
    mode = str(state.get("archive_mode") or "off")
    if mode not in ("on", "always"):
        problems.append("archive_mode is %s: no WAL is archived, so no point-in-time recovery is possible" % mode)
        return False, problems, warnings
    if state.get("in_recovery") and mode == "on":
        warnings.append("the server is in recovery: with archive_mode on only a primary archives")
        return True, problems, warnings
    archived_at, failed_at = _time(state.get("last_archived_time")), _time(state.get("last_failed_time"))
    failed = int(state.get("failed_count") or 0)
    last_ok = ("the last success was %s at %s" % (state["last_archived_wal"], _pitr.format_time(archived_at))
               if archived_at is not None else "nothing has been archived since %s" % (
                   state.get("stats_reset") or "the statistics were reset"))
    if failed and failed_at is not None and (archived_at is None or failed_at > archived_at):
        problems.append("archiving is failing: archive_command failed on %s at %s (%d failures since %s); %s - see "
                        "the server log for the command's error" % (
                            state.get("last_failed_wal"), _pitr.format_time(failed_at), failed,
                            state.get("stats_reset") or "the statistics reset", last_ok))
    elif failed:
        warnings.append("%d archiving failures since %s (the last on %s at %s); archiving has succeeded since"
                        % (failed, state.get("stats_reset") or "the statistics reset", state.get("last_failed_wal"),
                           _pitr.format_time(failed_at)))
    max_age_s = int(max_age_s)
    ready, oldest = state.get("ready_count"), _time(state.get("oldest_ready_time"))
    if ready is not None:
        if ready and oldest is not None and (now - oldest).total_seconds() > max_age_s:
            problems.append("%d WAL segment(s) wait to be archived, the oldest for %s (more than archive_max_age_s "
                            "%d s); %s" % (ready, _ago((now - oldest).total_seconds()), max_age_s, last_ok))
    else:
        # pg_wal/archive_status is unreadable (not a superuser / pg_monitor): segments between the last
        # archived one and the one being written are waiting.
        seg_size = int(state.get("wal_segment_size") or 16 * 1024 * 1024)
        current, last = _segno(state.get("current_wal"), seg_size), _segno(state.get("last_archived_wal"), seg_size)
        waiting = current - last - 1 if current is not None and last is not None else None
        if waiting and waiting > 0 and archived_at is not None and (now - archived_at).total_seconds() > max_age_s:
            problems.append("the last archived segment %s is %s old (more than archive_max_age_s %d s) while %d "
                            "finished segment(s) up to %s wait" % (
                                state.get("last_archived_wal"), _ago((now - archived_at).total_seconds()),
                                max_age_s, waiting, state.get("current_wal")))
    return not problems, problems, warnings


def wal_chain(backup_dir, archive_dir):
    """Whether ``archive_dir`` holds the WAL the newest base backup in ``backup_dir`` needs, and an unbroken run
    after it. A dict: complete (None without a base backup), backup, first_segment, stop_segment, last_segment,
    missing, problems."""
    out = dict(backup_dir=backup_dir, wal_archive=archive_dir, complete=False, backup=None, first_segment=None,
               stop_segment=None, last_segment=None, missing=None, problems=[])
    if not os.path.lexists(backup_dir):
        # No base backup taken yet (the directory is made by the first one): not a WAL problem either.
        out["complete"] = None
        return out
    try:
        archive = _pitr.WalArchive(archive_dir)
        candidates = _pitr.base_backup_candidates(backup_dir, archive)
        if not candidates:
            # Not a WAL problem: whoever needs a base backup reports its absence (preflight's PITR item).
            out["complete"] = None
            return out
        backup = _pitr.read_base_backup(candidates[0], archive)
        out["backup"] = backup.get("name") or backup["path"]
        seg_size = archive.seg_size
        start, stop = _pitr.segno_of(backup["start_lsn"], seg_size), _pitr.segno_of(backup["stop_lsn"], seg_size)
        out["first_segment"] = archive.name(backup["timeline"], start)
        out["stop_segment"] = archive.name(backup.get("stop_timeline") or backup["timeline"], stop)
        tli = _pitr.choose_timeline(archive, "latest", backup["timeline"])
        chain = _pitr.timeline_chain(archive, tli, backup["timeline"], backup["stop_lsn"])
        segments, missing, beyond = _pitr.contiguous_segments(archive, chain, start)
        if segments:
            out["last_segment"] = archive.name(*segments[-1])
        own_gap = _pitr.missing_backup_segment(dict(backup, seg_size=seg_size), segments)
        if own_gap:
            out["missing"] = own_gap
            out["problems"].append("segment %s is missing from %s: the WAL of base backup %s (%s..%s) is not "
                                   "complete, the backup cannot be restored" % (
                                       own_gap, archive_dir, out["backup"], out["first_segment"],
                                       out["stop_segment"]))
        elif beyond:
            out["missing"] = missing
            out["problems"].append("segment %s is missing from %s: WAL after base backup %s is unbroken only up to "
                                   "%s, later segments cannot be replayed"
                                   % (missing, archive_dir, out["backup"], out["last_segment"]))
    except ReplyxError as exc:
        out["problems"].append("the WAL chain of the newest base backup cannot be checked: %s" % exc.msg)
    out["complete"] = not out["problems"]
    return out
