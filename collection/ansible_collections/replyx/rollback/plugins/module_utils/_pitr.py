# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery: a base backup + a WAL archive, recovered to a target.

The pieces, from pure to effectful:

- LSN / time / WAL file name arithmetic (``parse_lsn``, ``parse_time``, ``segment_name``, ...).
- ``WalArchive``: what the archive directory holds (segments, timeline histories, backup histories).
- ``timeline_chain`` and ``contiguous_segments``: which segment files recovery will read, in order,
  and where the first gap is.
- ``waldump``: records read from archived WAL with pg_waldump (commits with their timestamps,
  restore points, the last record).
- ``read_base_backup``: start/stop LSN, timeline, stop time and size of a pg_basebackup backup.
- ``compute_window`` / ``check_target``: the recoverable window and whether a target lies inside it.
- ``PitrRestore``: preflight, plan, and the restore itself (stop, move aside, extract, configure,
  start, wait, report).

How the recoverable window is determined (exactly, from the WAL itself):

- Start: recovery cannot stop before the backup's consistency point (its stop LSN). For a time target
  the earliest reproducible time is the commit timestamp of the last transaction in WAL before the stop
  LSN: every state between that commit and the backup's end is the same state. When no commit can be
  found in the archive, the backup's STOP TIME from its backup history file (second precision) is used.
- End: the WAL recovery can read is the run of segment files that follows, without a gap, from the
  backup's start segment along the target timeline. PostgreSQL stops a time target at the first
  transaction that committed after the target time, so the newest reachable time is the commit
  timestamp of the newest transaction in that run (exclusive). The newest reachable LSN is the start
  of the last complete record in the run.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import pwd
import re
import shutil
import tarfile
import time

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure, ConnectionFailure, InputError, ReplyxError, SafetyRefusal)
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import load_manifest, verify_manifest
from ansible_collections.replyx.rollback.plugins.module_utils._pg import (
    connection_settings, pg_bin, pg_common_argument_spec)
from ansible_collections.replyx.rollback.plugins.module_utils import _pgquery

TARGET_KEYS = ("target_time", "target_lsn", "target_xid", "target_name", "target_immediate")
RECOVERY_KEYS = ("restore_command", "recovery_target", "recovery_target_time", "recovery_target_lsn",
                 "recovery_target_xid", "recovery_target_name", "recovery_target_inclusive",
                 "recovery_target_action", "recovery_target_timeline", "primary_conninfo", "primary_slot_name")
PHYSICAL_KINDS = ("physical", "base", "basebackup")
UTC = datetime.timezone.utc
EARLIER_SEGMENTS = 16  # how far before a backup to look for its last commit

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")
_TIME = re.compile(r"^\s*(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d{1,6})?\s*(Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?\s*$",
                   re.I)
_RECORD = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), "
                     r"prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$")
_XACT = re.compile(r"^(COMMIT|ABORT)(?:_PREPARED)?\s+(?:\d+:\s+)?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Za-z]+|[+-][0-9:]+)")
_WALDUMP_ERROR_AT = re.compile(r"at ([0-9A-F]+/[0-9A-F]+)")
_LOG_STOP = re.compile(r"recovery stopping .*")
_LOG_LAST_XACT = re.compile(r"last completed transaction was at log time (.+?)\s*$", re.M)
_LOG_NEW_TLI = re.compile(r"selected new timeline ID: (\d+)")
_LOG_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


class OutsideWindow(SafetyRefusal):
    """The target lies outside the window of one base backup (``before_backup``: an older one may fit)."""

    def __init__(self, reason, before_backup=False, **kwargs):
        super(OutsideWindow, self).__init__(reason, **kwargs)
        self.before_backup = before_backup


def recovery_argument_spec():
    """Options shared by pg_pitr_restore and pg_physical_restore (documented in the doc fragment
    replyx.rollback.recovery), beside the connection options."""
    spec = pg_common_argument_spec()
    spec.update(
        base_backup=dict(type="path"),
        backup_dir=dict(type="path"),
        wal_archive=dict(type="path", required=True),
        data_dir=dict(type="path", required=True),
        forensic_dir=dict(type="path"),
        target_time=dict(type="str"),
        target_lsn=dict(type="str"),
        target_xid=dict(type="str"),
        target_name=dict(type="str"),
        target_immediate=dict(type="bool", default=False),
        target_inclusive=dict(type="bool", default=True),
        target_action=dict(type="str", default="promote", choices=["promote", "pause", "shutdown"]),
        target_timeline=dict(type="str", default="latest"),
        restored_archiving=dict(type="str", default="off", choices=["off", "keep"]),
        os_user=dict(type="str", default="postgres"),
        server_port=dict(type="int"),
        listen_addresses=dict(type="str"),
        server_log=dict(type="path"),
        min_free_bytes=dict(type="int", default=1073741824),
        free_space_factor=dict(type="float", default=1.2),
        timeout=dict(type="int", default=3600),
        confirm=dict(type="bool", default=False),
    )
    return spec


# ---------------------------------------------------------------------------------------------------
# LSN, time and WAL file name arithmetic

def parse_lsn(text, what="LSN"):
    match = _LSN.match(str(text)) if text is not None else None
    if not match:
        raise InputError("%r is not an LSN (expected hex 'X/Y', for example 0/3000148)" % (text,),
                         verb="parse", obj=what)
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value):
    return "%X/%08X" % (value >> 32, value & 0xFFFFFFFF)


def parse_time(text, what="target_time"):
    """An aware UTC datetime. A time without a zone is refused: at 3 a.m. nobody should guess the zone."""
    if isinstance(text, datetime.datetime):
        if text.tzinfo is None:
            raise InputError("%s has no time zone" % text, verb="parse", obj=what)
        return text.astimezone(UTC)
    match = _TIME.match(str(text)) if text is not None else None
    if not match:
        raise InputError("%r is not a timestamp (expected 'YYYY-MM-DD HH:MM:SS[.ffffff]+00' or '... UTC')" % (text,),
                         verb="parse", obj=what)
    day, clock, frac, zone = match.groups()
    if not zone:
        raise InputError("%r has no time zone; add one (+00, +02:00, UTC), as 'select now()' prints it" % (text,),
                         verb="parse", obj=what)
    micro = int((frac or ".0")[1:].ljust(6, "0"))
    value = datetime.datetime.strptime(day + " " + clock, "%Y-%m-%d %H:%M:%S").replace(microsecond=micro)
    zone = zone.upper()
    if zone in ("Z", "UTC", "GMT"):
        offset = datetime.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    return value.replace(tzinfo=datetime.timezone(offset)).astimezone(UTC)


def format_time(value):
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00") if value is not None else None


def segments_per_id(seg_size):
    return 0x100000000 // seg_size


def segment_name(tli, segno, seg_size):
    per = segments_per_id(seg_size)
    return "%08X%08X%08X" % (tli, segno // per, segno % per)


def parse_segment_name(name, seg_size):
    match = _SEGMENT.match(name)
    if not match:
        return None
    tli, log, seg = (int(g, 16) for g in match.groups())
    return tli, log * segments_per_id(seg_size) + seg


def segno_of(lsn, seg_size):
    return lsn // seg_size


def lsn_of_segment(segno, seg_size):
    return segno * seg_size


# ---------------------------------------------------------------------------------------------------
# The archive

class WalArchive(object):
    """The contents of a WAL archive directory (uncompressed segment files, as ``cp`` archives them)."""

    def __init__(self, path):
        self.path = path
        if not os.path.isdir(path):
            raise InputError("%s is not a directory" % path, verb="read", obj="WAL archive")
        names = sorted(os.listdir(path))
        seg_names = [n for n in names if _SEGMENT.match(n)]
        self.histories = dict((int(_HISTORY.match(n).group(1), 16), n) for n in names if _HISTORY.match(n))
        self.backup_histories = [n for n in names if n.endswith(".backup")]
        self.partials = [n for n in names if n.endswith(".partial")]
        sizes = set(os.path.getsize(os.path.join(path, n)) for n in seg_names)
        if len(sizes) > 1:
            raise InputError("segment files of different sizes %s: compressed or partial files are not supported"
                             % sorted(sizes), verb="read", obj="WAL archive %s" % path)
        self.seg_size = sizes.pop() if sizes else 16 * 1024 * 1024
        if self.seg_size & (self.seg_size - 1) or not 1 << 20 <= self.seg_size <= 1 << 30:
            raise InputError("segment size %d is not a power of two between 1 MB and 1 GB (compressed files?)"
                             % self.seg_size, verb="read", obj="WAL archive %s" % path)
        self.segments = set(parse_segment_name(n, self.seg_size) for n in seg_names)

    def has(self, tli, segno):
        return (tli, segno) in self.segments

    def name(self, tli, segno):
        return segment_name(tli, segno, self.seg_size)

    def read_history(self, tli):
        """[(parent_tli, switchpoint_lsn)] from <tli>.history, oldest first."""
        if tli not in self.histories:
            raise InputError("timeline history file %08X.history is not in the archive" % tli,
                             verb="read", obj="WAL archive %s" % self.path)
        entries = []
        with open(os.path.join(self.path, self.histories[tli])) as fh:
            for line in fh:
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                entries.append((int(fields[0]), parse_lsn(fields[1], "timeline history switchpoint")))
        return entries

    def backup_history(self, tli, start_lsn):
        """The key/value lines of the backup history file written when a base backup ended, or {}."""
        name = "%s.%08X.backup" % (self.name(tli, segno_of(start_lsn, self.seg_size)), start_lsn % self.seg_size)
        path = os.path.join(self.path, name)
        if not os.path.isfile(path):
            return {}
        values = {}
        with open(path) as fh:
            for line in fh:
                if ":" in line:
                    key, value = line.split(":", 1)
                    values[key.strip()] = value.strip()
        values["file"] = name
        return values


def choose_timeline(archive, target_timeline, backup_tli):
    value = str(target_timeline if target_timeline is not None else "latest").strip().lower()
    if value == "latest":
        return max([backup_tli] + list(archive.histories))
    if value == "current":
        return backup_tli
    try:
        return int(value, 16) if value.startswith("0x") else int(value)
    except ValueError:
        raise InputError("%r is not 'latest', 'current' or a timeline number" % target_timeline,
                         verb="parse", obj="target_timeline")


def timeline_chain(archive, target_tli, backup_tli, backup_stop_lsn):
    """[(tli, begin_lsn, end_lsn or None)] from the backup's timeline to the target timeline."""
    entries = archive.read_history(target_tli) if target_tli > 1 and target_tli != backup_tli else []
    chain, begin = [], 0
    for parent, switchpoint in entries:
        chain.append((parent, begin, switchpoint))
        begin = switchpoint
    chain.append((target_tli, begin, None))
    tlis = [c[0] for c in chain]
    if backup_tli not in tlis:
        raise SafetyRefusal("timeline %d is not a descendant of the base backup's timeline %d (history %s)"
                            % (target_tli, backup_tli, tlis), verb="check", obj="the target timeline")
    end = chain[tlis.index(backup_tli)][2]
    if end is not None and backup_stop_lsn > end:
        raise SafetyRefusal("timeline %d branched off timeline %d at %s, before the base backup ended (%s)"
                            % (target_tli, backup_tli, format_lsn(end), format_lsn(backup_stop_lsn)),
                            verb="check", obj="the target timeline")
    return chain


def expected_tli(chain, segno, seg_size):
    """The timeline whose copy of a segment recovery reads: the newest one that began at or before it."""
    for tli, begin, _end in reversed(chain):
        if segno_of(begin, seg_size) <= segno:
            return tli
    return chain[0][0]


def contiguous_segments(archive, chain, start_segno):
    """(segments [(tli, segno)] present without a gap from start_segno, first missing name or None,
    whether any later segment of the chain exists beyond the gap)."""
    found, segno = [], start_segno
    while True:
        tli = expected_tli(chain, segno, archive.seg_size)
        if not archive.has(tli, segno):
            break
        found.append((tli, segno))
        segno += 1
    chain_tlis = set(c[0] for c in chain)
    beyond = any(s > segno and t in chain_tlis and expected_tli(chain, s, archive.seg_size) == t
                 for t, s in archive.segments)
    missing = archive.name(expected_tli(chain, segno, archive.seg_size), segno) if beyond or not found else None
    return found, missing, beyond


def pieces(segments):
    """Split [(tli, segno)] into runs on one timeline: [(tli, first_segno, last_segno)]."""
    runs = []
    for tli, segno in segments:
        if runs and runs[-1][0] == tli and runs[-1][2] == segno - 1:
            runs[-1] = (tli, runs[-1][1], segno)
        else:
            runs.append((tli, segno, segno))
    return runs


# ---------------------------------------------------------------------------------------------------
# pg_waldump

def parse_waldump(text):
    """Records from pg_waldump output: dicts with rmgr, xid, lsn, desc, kind (commit/abort/restore_point) and time."""
    records = []
    for line in text.splitlines():
        match = _RECORD.match(line.strip())
        if not match:
            continue
        rmgr, xid, lsn, desc = match.groups()
        record = dict(rmgr=rmgr, xid=int(xid), lsn=parse_lsn(lsn), desc=desc.strip(), kind=None, time=None)
        if rmgr == "Transaction":
            xact = _XACT.match(record["desc"])
            if xact:
                record["kind"] = xact.group(1).lower()
                record["time"] = parse_time(xact.group(2) + " " + xact.group(3), "pg_waldump timestamp")
        elif rmgr == "XLOG" and record["desc"].startswith("RESTORE_POINT"):
            record["kind"] = "restore_point"
            record["name"] = record["desc"][len("RESTORE_POINT"):].strip()
        records.append(record)
    return records


def waldump(run, waldump_bin, archive, tli, first_segno, last_segno, rmgr=None, xid=None):
    """Records of segments first..last of one timeline. A record cut off by the end of the last segment
    (its continuation is not archived) is the normal end of archived WAL, not an error."""
    argv = [waldump_bin, "--path", archive.path]
    if rmgr:
        argv += ["--rmgr", rmgr]
    if xid is not None:
        argv += ["--xid", str(xid)]
    argv += [archive.name(tli, first_segno), archive.name(tli, last_segno)]
    rc, out, err = run(argv, dict(TZ="UTC", LC_ALL="C"))
    records = parse_waldump(out)
    if rc != 0:
        at = _WALDUMP_ERROR_AT.search(err or "")
        tail_start = lsn_of_segment(last_segno, archive.seg_size)
        tolerated = (at is not None and parse_lsn(at.group(1)) >= tail_start) or "could not find file" in (err or "")
        if not tolerated:
            raise CommandFailure((err or out or "pg_waldump failed").strip().splitlines()[-1], verb="read",
                                 obj="WAL %s" % archive.name(tli, first_segno), cmd=argv, rc=rc, stderr=err)
    return records


# ---------------------------------------------------------------------------------------------------
# Base backups

def _first(mapping, *keys):
    for key in keys:
        if mapping.get(key) not in (None, ""):
            return mapping[key]
    return None


def _backup_layout(path):
    """(directory, layout 'plain'|'tar', base tar or None, pg_wal tar or None, extra tars)."""
    if os.path.isfile(path):
        directory, names = os.path.dirname(path), [os.path.basename(path)]
        names += [n for n in os.listdir(directory) if n.startswith("pg_wal.tar")]
    elif os.path.isdir(path):
        directory, names = path, os.listdir(path)
        if "PG_VERSION" in names:
            return directory, "plain", None, None, []
    else:
        raise InputError("%s does not exist" % path, verb="read", obj="base backup")
    base = [n for n in names if n.startswith("base.tar")]
    wal = [n for n in names if n.startswith("pg_wal.tar")]
    extra = [n for n in names if ".tar" in n and n not in base + wal]
    if len(base) != 1:
        raise InputError("%s holds neither a plain data directory (PG_VERSION) nor exactly one base.tar[.*]" % path,
                         verb="read", obj="base backup")
    return (directory, "tar", os.path.join(directory, base[0]),
            os.path.join(directory, wal[0]) if wal else None, extra)


def _pg_version_of(layout, directory, base_tar):
    try:
        if layout == "plain":
            with open(os.path.join(directory, "PG_VERSION")) as fh:
                return fh.read().strip()
        if base_tar.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(base_tar) as tar:
                member = tar.extractfile("PG_VERSION")
                return member.read().decode().strip() if member else None
    except (IOError, OSError, KeyError, tarfile.TarError):
        return None
    return None


def read_base_backup(manifest, archive):
    """What recovery needs to know about a pg_basebackup backup described by a replyx manifest."""
    path = manifest["path"]
    directory, layout, base_tar, wal_tar, extra = _backup_layout(path)
    info = dict(manifest_path=manifest.get("manifest_path"), path=path, name=manifest.get("name"),
                layout=layout, base_tar=base_tar, wal_tar=wal_tar, tablespace_tars=extra,
                sha256=manifest.get("sha256"), verified=manifest.get("verified", False))
    pg_manifest = {}
    pg_manifest_path = os.path.join(directory, "backup_manifest")
    if os.path.isfile(pg_manifest_path):
        try:
            with open(pg_manifest_path) as fh:
                pg_manifest = json.load(fh)
        except (ValueError, IOError, OSError):
            pg_manifest = {}
    ranges = pg_manifest.get("WAL-Ranges") or []
    if ranges:
        info["start_lsn"] = parse_lsn(ranges[0]["Start-LSN"])
        info["stop_lsn"] = parse_lsn(ranges[-1]["End-LSN"])
        info["timeline"] = int(ranges[0]["Timeline"])
        info["stop_timeline"] = int(ranges[-1]["Timeline"])
        info["size"] = sum(int(f.get("Size", 0)) for f in pg_manifest.get("Files", []))
    else:
        start = _first(manifest, "start_lsn", "wal_start_lsn", "backup_start_lsn")
        stop = _first(manifest, "stop_lsn", "end_lsn", "wal_end_lsn", "backup_stop_lsn")
        if start is None or stop is None:
            raise InputError("neither PostgreSQL's backup_manifest nor start_lsn/stop_lsn in the manifest",
                             verb="read", obj="base backup %s" % path)
        info["start_lsn"], info["stop_lsn"] = parse_lsn(start), parse_lsn(stop)
        info["timeline"] = int(_first(manifest, "timeline", "start_timeline") or 1)
        info["stop_timeline"] = int(_first(manifest, "stop_timeline") or info["timeline"])
        info["size"] = int(manifest.get("size") or 0)
    history = archive.backup_history(info["timeline"], info["start_lsn"])
    info["backup_history_file"] = history.get("file")
    stop_time = history.get("STOP TIME") or _first(manifest, "stop_time", "end_time", "finished")
    info["stop_time"] = parse_time(stop_time, "base backup stop time") if stop_time else None
    info["pg_version"] = _pg_version_of(layout, directory, base_tar) or manifest.get("server_version")
    return info


def base_backup_candidates(directory, archive):
    """The manifests of the physical backups in ``directory`` that can be read, newest (stop LSN) first."""
    if not os.path.isdir(directory):
        raise InputError("%s is not a directory" % directory, verb="read", obj="backup_dir")
    found = []
    for name in os.listdir(directory):
        if name.endswith(".manifest.json"):
            try:
                manifest = load_manifest(os.path.join(directory, name))
            except InputError:
                continue
            if str(manifest.get("kind", "")).lower() in PHYSICAL_KINDS:
                try:
                    info = read_base_backup(manifest, archive)
                except InputError:
                    continue
                found.append((info["stop_lsn"], manifest))
    found.sort(key=lambda item: item[0], reverse=True)
    return [m for _lsn, m in found]


def public_backup(info):
    """The backup as returned to the user (LSNs and times as text)."""
    out = dict((k, v) for k, v in info.items() if k not in ("start_lsn", "stop_lsn", "stop_time"))
    out["start_lsn"] = format_lsn(info["start_lsn"])
    out["stop_lsn"] = format_lsn(info["stop_lsn"])
    out["stop_time"] = format_time(info.get("stop_time"))
    return out


# ---------------------------------------------------------------------------------------------------
# The window

def validate_target(params):
    """(kind, value) of the one recovery target given; InputError for none or several."""
    given = [k for k in TARGET_KEYS if params.get(k) not in (None, "", False)]
    if len(given) != 1:
        raise InputError("give exactly one of %s (got %s)" % (", ".join(TARGET_KEYS), ", ".join(given) or "none"),
                         verb="validate", obj="the recovery target")
    key = given[0]
    kind = key[len("target_"):]
    value = params[key]
    if kind == "time":
        value = parse_time(value)
    elif kind == "lsn":
        value = parse_lsn(value, "target_lsn")
    elif kind == "xid":
        if not str(value).isdigit():
            raise InputError("%r is not a transaction id (a number)" % (value,), verb="parse", obj="target_xid")
        value = int(value)
    elif kind == "immediate":
        value = True
    return kind, value


def describe_target(kind, value):
    if kind == "time":
        return "time %s" % format_time(value)
    if kind == "lsn":
        return "LSN %s" % format_lsn(value)
    if kind == "xid":
        return "transaction %d" % value
    if kind == "name":
        return "restore point %r" % value
    if kind == "end":
        return "the end of the archived WAL"
    return "the end of the base backup (immediate)"


def missing_backup_segment(backup, segments):
    """The name of the first segment of the backup's own WAL (start..stop LSN) not in ``segments``
    (the contiguous run from its start segment), or None when all are there."""
    seg_size = backup["seg_size"]
    have = set(s for _t, s in segments)
    for segno in range(segno_of(backup["start_lsn"], seg_size), segno_of(backup["stop_lsn"], seg_size) + 1):
        if segno not in have:
            return segment_name(backup["timeline"], segno, seg_size)
    return None


def compute_window(backup, chain, segments, missing, beyond, scan, has=None):
    """The recoverable window of one backup. ``scan(tli, first, last, rmgr=None, xid=None)`` reads WAL,
    ``has(tli, segno)`` says whether the archive holds a segment (older WAL, searched for the last commit).

    Returns a dict: start_lsn, start_time, start_time_source, end_lsn, end_time, segments, gap.
    """
    seg_size_probe = backup["seg_size"]
    start_segno = segno_of(backup["start_lsn"], seg_size_probe)
    stop_segno = segno_of(backup["stop_lsn"], seg_size_probe)
    gap = missing_backup_segment(backup, segments)
    if gap:
        raise SafetyRefusal("segment %s is missing: the base backup's own WAL (%s..%s) is not complete in the "
                            "archive" % (gap, format_lsn(backup["start_lsn"]), format_lsn(backup["stop_lsn"])),
                            verb="verify", obj="WAL continuity")
    # Start: the last commit before the consistency point.
    start_time, source = None, None
    backup_runs = pieces([s for s in segments if s[1] <= stop_segno])
    for tli, first, last in reversed(backup_runs):
        commits = [r for r in scan(tli, first, last, rmgr="Transaction")
                   if r["kind"] in ("commit", "abort") and r["lsn"] < backup["stop_lsn"]]
        if commits:
            start_time, source = commits[-1]["time"], "last transaction before the backup's stop LSN (pg_waldump)"
            break
    if start_time is None and has is not None:
        # Nothing committed while the backup ran: the last commit is in older archived WAL, if any is kept.
        for segno in range(start_segno - 1, max(start_segno - 1 - EARLIER_SEGMENTS, -1), -1):
            tli = expected_tli(chain, segno, seg_size_probe)
            if not has(tli, segno):
                break
            commits = [r for r in scan(tli, segno, segno, rmgr="Transaction") if r["kind"] in ("commit", "abort")]
            if commits:
                start_time, source = commits[-1]["time"], "last transaction before the backup started (pg_waldump)"
                break
    if start_time is None and backup.get("stop_time") is not None:
        start_time, source = backup["stop_time"], "STOP TIME of the backup history file (second precision)"
    # End: the newest commit and the last complete record of the contiguous run.
    end_time, end_lsn = None, None
    runs = pieces(segments)
    last_tli, _first_seg, last_seg = runs[-1]
    records = scan(last_tli, last_seg, last_seg)
    if records:
        end_lsn = records[-1]["lsn"]
    for tli, segno in reversed(segments):
        if segno < start_segno:
            break
        commits = [r for r in (records if (tli, segno) == (last_tli, last_seg) else
                               scan(tli, segno, segno, rmgr="Transaction")) if r["kind"] in ("commit", "abort")]
        if commits:
            end_time = commits[-1]["time"]
            break
    return dict(start_lsn=backup["stop_lsn"], start_time=start_time, start_time_source=source,
                end_lsn=end_lsn if end_lsn is not None else backup["stop_lsn"], end_time=end_time,
                first_segment=segment_name(segments[0][0], segments[0][1], seg_size_probe),
                last_segment=segment_name(last_tli, last_seg, seg_size_probe), segment_count=len(segments),
                gap=missing if beyond else None, timelines=[c[0] for c in chain])


def public_window(window):
    out = dict(window)
    for key in ("start_lsn", "end_lsn"):
        out[key] = format_lsn(window[key]) if window.get(key) is not None else None
    for key in ("start_time", "end_time"):
        out[key] = format_time(window.get(key))
    return out


def _gap_hint(window):
    if window.get("gap"):
        return ("; segment %s is missing from the archive, so WAL is contiguous from the backup only up to %s"
                % (window["gap"], window["last_segment"]))
    return ("; the newest archived segment is %s (if the server still runs, SELECT pg_switch_wal() and wait for "
            "the archiver)" % window["last_segment"])


def check_target(kind, value, window, backup, find_record):
    """Raise OutsideWindow unless the target is reachable; returns a description of where recovery stops.

    ``find_record(kind, value)`` returns the first matching record from the backup's start, or None.
    """
    verb, obj = "check", "the recoverable window"
    if window.get("gap"):
        verb, obj = "verify", "WAL continuity"
    span = "%s .. %s" % (format_time(window["start_time"]), format_time(window["end_time"]))
    if kind == "time":
        if window["start_time"] is not None and value < window["start_time"]:
            raise OutsideWindow("target time %s is before the end of base backup %s (window %s)"
                                % (format_time(value), backup.get("name") or backup["path"], span),
                                before_backup=True, verb="check", obj="the recoverable window")
        if window["end_time"] is None or value >= window["end_time"]:
            raise OutsideWindow("target time %s is not before the newest transaction in the archived WAL (%s): "
                                "PostgreSQL stops at the first commit after the target, and there is none%s"
                                % (format_time(value), format_time(window["end_time"]), _gap_hint(window)),
                                verb=verb, obj=obj)
        return "before the first transaction committed after %s" % format_time(value)
    if kind == "lsn":
        if value < window["start_lsn"]:
            raise OutsideWindow("target LSN %s is before the end of base backup %s (%s)"
                                % (format_lsn(value), backup.get("name") or backup["path"],
                                   format_lsn(window["start_lsn"])), before_backup=True, verb="check", obj=obj)
        if value > window["end_lsn"]:
            raise OutsideWindow("target LSN %s is after the last archived WAL record (%s)%s"
                                % (format_lsn(value), format_lsn(window["end_lsn"]), _gap_hint(window)),
                                verb=verb, obj=obj)
        return "at LSN %s" % format_lsn(value)
    if kind in ("xid", "name"):
        record = find_record(kind, value)
        if record is None:
            raise OutsideWindow("%s is not in the archived WAL from the base backup on%s"
                                % (describe_target(kind, value), _gap_hint(window)), verb=verb, obj=obj)
        if record["lsn"] < window["start_lsn"]:
            raise OutsideWindow("%s is at %s, before the end of base backup %s (%s)"
                                % (describe_target(kind, value), format_lsn(record["lsn"]),
                                   backup.get("name") or backup["path"], format_lsn(window["start_lsn"])),
                                before_backup=True, verb="check", obj="the recoverable window")
        return "%s at LSN %s%s" % (describe_target(kind, value), format_lsn(record["lsn"]),
                                   (", time %s" % format_time(record["time"])) if record.get("time") else "")
    if kind == "end":
        if window.get("gap"):
            raise OutsideWindow("WAL after %s cannot be replayed%s" % (window["last_segment"], _gap_hint(window)),
                                verb="verify", obj="WAL continuity")
        return "at the end of the archived WAL (last record %s in %s)" % (
            format_lsn(window["end_lsn"]), window["last_segment"])
    return "at the consistency point %s" % format_lsn(window["start_lsn"])


# ---------------------------------------------------------------------------------------------------
# Recovery settings

def quote_conf(value):
    return "'%s'" % str(value).replace("'", "''")


def recovery_settings(params, kind, value, archive_path):
    settings = [("restore_command", "cp %s %%p" % _shell_quote(os.path.join(archive_path, "%f")))]
    if kind == "time":
        settings.append(("recovery_target_time", format_time(value)))
    elif kind == "lsn":
        settings.append(("recovery_target_lsn", format_lsn(value)))
    elif kind == "xid":
        settings.append(("recovery_target_xid", str(value)))
    elif kind == "name":
        settings.append(("recovery_target_name", value))
    elif kind != "end":
        settings.append(("recovery_target", "immediate"))
    if kind in ("time", "lsn", "xid"):
        settings.append(("recovery_target_inclusive", "on" if params.get("target_inclusive", True) else "off"))
    if kind != "end":  # without a target, recovery replays all WAL it can read and promotes
        settings.append(("recovery_target_action", params.get("target_action") or "promote"))
    settings.append(("recovery_target_timeline", str(params.get("target_timeline") or "latest")))
    if (params.get("restored_archiving") or "off") == "off":
        settings.append(("archive_mode", "off"))
    if params.get("server_port"):
        settings.append(("port", str(params["server_port"])))
    if params.get("listen_addresses"):
        settings.append(("listen_addresses", params["listen_addresses"]))
    return settings


def _shell_quote(text):
    if re.match(r"^[\w@%+=:,./-]+$", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def rewrite_auto_conf(text, settings, header):
    """postgresql.auto.conf without earlier recovery/overridden settings, plus ours at the end."""
    ours = set(k for k, _v in settings)
    kept = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip().lower() if "=" in line and not line.lstrip().startswith("#") else None
        if key and (key in ours or key in RECOVERY_KEYS):
            continue
        kept.append(line)
    kept.append("# %s" % header)
    kept += ["%s = %s" % (k, quote_conf(v)) for k, v in settings]
    return "\n".join(kept) + "\n"


def parse_server_log(text):
    out = {}
    stop = _LOG_STOP.findall(text)
    if stop:
        out["recovery_stop"] = stop[-1].strip()
    last = _LOG_LAST_XACT.findall(text)
    if last:
        out["last_transaction_time"] = last[-1]
    tli = _LOG_NEW_TLI.findall(text)
    if tli:
        out["new_timeline"] = int(tli[-1])
    redo = _LOG_REDO_DONE.findall(text)
    if redo:
        out["redo_done_lsn"] = redo[-1]
    out["paused"] = "pausing at the end of recovery" in text
    out["shut_down"] = "shutdown at recovery target" in text or "database system is shut down" in text
    return out


def utc_stamp(now=None):
    return (now or datetime.datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------------------------------------------
# The service

class PitrRestore(object):
    """Preflight, plan and run one point-in-time recovery. ``module`` is an AnsibleModule."""

    module_name = "pg_pitr_restore"

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.steps = []
        self.commands = []
        self.started = time.time()
        self.stamp = utc_stamp()
        self.os_user = self.params.get("os_user") or "postgres"
        self.data_dir = os.path.abspath(self.params["data_dir"].rstrip("/") or "/")
        self.forensic_dir = os.path.abspath(self.params.get("forensic_dir") or os.path.dirname(self.data_dir))
        self.forensic_copy = None
        self.server_log = self.params.get("server_log") or os.path.join(
            self.data_dir, "log", "replyx-pitr-%s.log" % self.stamp)
        self.bin_dir = self.params.get("pg_bin_dir")

    # -- commands ---------------------------------------------------------------------------------
    def bin(self, name):
        return pg_bin(self.module, name, self.bin_dir)

    def as_os_user(self, argv):
        if os.geteuid() == 0:
            return [self.module.get_bin_path("runuser", required=True), "-u", self.os_user, "--"] + argv
        return argv

    def run(self, argv, env=None, check=True, verb="run", obj=None):
        self.commands.append(list(argv))
        rc, out, err = self.module.run_command(argv, environ_update=env or {})
        if check and rc != 0:
            raise CommandFailure((err or out or "exit code %d" % rc).strip().splitlines()[-1] if (err or out) else
                                 "exit code %d" % rc, verb=verb, obj=obj or os.path.basename(argv[0]), cmd=argv,
                                 rc=rc, stdout=out, stderr=err)
        return rc, out, err

    def _scan_runner(self, argv, env):
        rc, out, err = self.module.run_command(argv, environ_update=env)
        return rc, out, err

    # -- preflight ----------------------------------------------------------------------------------
    def target(self):
        """(kind, value) of the recovery target; a PITR needs exactly one."""
        return validate_target(self.params)

    def _confirm_text(self):
        return ("confirm=true is required: the data directory %s is replaced (the current one is moved to %s, never "
                "deleted)" % (self.data_dir, self.forensic_dir))

    def preflight(self):
        params = self.params
        self.kind, self.value = self.target()
        if not params.get("base_backup") and not params.get("backup_dir"):
            raise InputError("give base_backup (a manifest or backup path) or backup_dir", verb="choose",
                             obj="a base backup")
        if not self.module.check_mode and not params.get("confirm"):
            raise SafetyRefusal(self._confirm_text(), verb="restore", obj="data directory %s" % self.data_dir)
        if os.path.isdir(self.data_dir) and os.path.ismount(self.data_dir):
            raise SafetyRefusal("%s is a mount point and cannot be moved aside; restore into a directory below it"
                                % self.data_dir, verb="move", obj="data directory %s" % self.data_dir)
        self.archive = WalArchive(params["wal_archive"])
        self.waldump_bin = self.bin("pg_waldump")
        candidates = self._candidates()
        errors = []
        for manifest in candidates:
            try:
                self._try_backup(manifest)
                break
            except OutsideWindow as exc:
                if params.get("base_backup") or not exc.before_backup:
                    raise
                errors.append(exc.msg)
            except SafetyRefusal as exc:
                if params.get("base_backup"):
                    raise
                errors.append(exc.msg)
        else:
            raise OutsideWindow("no verified base backup in %s ends before %s (%s)"
                                % (params.get("backup_dir"), describe_target(self.kind, self.value),
                                   "; ".join(errors) or "no physical backups found"),
                                verb="choose", obj="a base backup")
        self._check_versions()
        self._check_space()
        self.settings = recovery_settings(params, self.kind, self.value, self.archive.path)
        return self

    def _candidates(self):
        if self.params.get("base_backup"):
            return [load_manifest(self.params["base_backup"])]
        return base_backup_candidates(self.params["backup_dir"], self.archive)

    def _try_backup(self, manifest):
        manifest = verify_manifest(manifest)
        backup = read_base_backup(manifest, self.archive)
        backup["seg_size"] = self.archive.seg_size
        if backup["tablespace_tars"]:
            raise SafetyRefusal("the backup has tablespace archives %s; only backups without tablespaces are "
                                "supported" % backup["tablespace_tars"], verb="restore", obj="base backup")
        tli = choose_timeline(self.archive, self.params.get("target_timeline"), backup["timeline"])
        chain = timeline_chain(self.archive, tli, backup["timeline"], backup["stop_lsn"])
        start_segno = segno_of(backup["start_lsn"], self.archive.seg_size)
        segments, missing, beyond = contiguous_segments(self.archive, chain, start_segno)
        if not segments:
            raise SafetyRefusal("segment %s (the base backup's first WAL segment) is missing from %s"
                                % (missing, self.archive.path), verb="verify", obj="WAL continuity")
        window = compute_window(backup, chain, segments, missing, beyond, self._scan, self.archive.has)

        def find_record(kind, value):
            for run_tli, first, last in pieces(segments):
                if kind == "xid":
                    records = self._scan(run_tli, first, last, rmgr="Transaction", xid=value)
                    hits = [r for r in records if r["kind"] in ("commit", "abort") and r["xid"] == value]
                else:
                    records = self._scan(run_tli, first, last, rmgr="XLOG")
                    hits = [r for r in records if r["kind"] == "restore_point" and r.get("name") == value]
                hits = [r for r in hits if r["lsn"] >= backup["start_lsn"]]
                if hits:
                    return hits[0]
            return None

        self.stop_point = check_target(self.kind, self.value, window, backup, find_record)
        self.backup, self.window, self.chain, self.target_tli = backup, window, chain, tli

    def _scan(self, tli, first, last, rmgr=None, xid=None):
        return waldump(self._scan_runner, self.waldump_bin, self.archive, tli, first, last, rmgr=rmgr, xid=xid)

    def _check_versions(self):
        rc, out, _err = self.run([self.bin("pg_ctl"), "--version"], verb="run", obj="pg_ctl --version")
        match = re.search(r"(\d+)(?:\.\d+)?", out or "")
        tools = match.group(1) if match else None
        self.tools_major = tools
        backup_major = str(self.backup.get("pg_version") or "").split(".", 1)[0]
        if tools and backup_major and tools != backup_major:
            raise SafetyRefusal("the base backup is PostgreSQL %s but the tools in %s are PostgreSQL %s"
                                % (backup_major, self.bin_dir or "PATH", tools), verb="check",
                                obj="the PostgreSQL version")

    def _check_space(self):
        factor = float(self.params.get("free_space_factor") or 1.0)
        need = int(self.backup["size"] * factor) + int(self.params.get("min_free_bytes") or 0)
        probe = self.data_dir
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        stat = os.statvfs(probe)
        free = stat.f_bavail * stat.f_frsize
        self.space = dict(required_bytes=need, free_bytes=free, filesystem_of=probe,
                          backup_bytes=self.backup["size"])
        if free < need:
            minimum = int(self.params.get("min_free_bytes") or 0)
            raise SafetyRefusal("%d bytes free on the filesystem of %s, %d needed (backup %d bytes x %.2f + "
                                "min_free_bytes %d)" % (free, probe, need, self.backup["size"], factor, minimum),
                                verb="check", obj="free disk space")
        if os.path.isdir(self.data_dir):
            fprobe = self.forensic_dir
            while not os.path.exists(fprobe):
                fprobe = os.path.dirname(fprobe)
            if os.path.exists(fprobe) and os.stat(fprobe).st_dev != os.stat(self.data_dir).st_dev:
                size = _dir_size(self.data_dir)
                fstat = os.statvfs(fprobe)
                ffree = fstat.f_bavail * fstat.f_frsize
                self.space["forensic_move_bytes"] = size
                if ffree < size:
                    raise SafetyRefusal("forensic_dir %s is on another filesystem with %d bytes free; moving the "
                                        "data directory there needs %d" % (self.forensic_dir, ffree, size),
                                        verb="check", obj="free disk space")

    # -- plan ---------------------------------------------------------------------------------------
    def plan(self):
        running = self._server_running()
        has_data = os.path.isdir(self.data_dir) and bool(os.listdir(self.data_dir))
        forensic = os.path.join(self.forensic_dir, "%s-%s" % (os.path.basename(self.data_dir), self.stamp))
        steps = []
        if running:
            steps.append("stop the server on %s (pg_ctl stop -m fast)" % self.data_dir)
        if has_data:
            steps.append("move %s aside to %s (kept, never deleted)" % (self.data_dir, forensic))
        steps.append("restore base backup %s (%s) into %s, mode 0700, owner %s"
                     % (self.backup["path"], self.backup["layout"], self.data_dir, self.os_user))
        steps += self._recovery_steps()
        return dict(steps=steps, server_running=running, forensic_copy=forensic if has_data else None)

    def _recovery_steps(self):
        """The steps after the data directory is in place: configure, start, wait."""
        action = self.params.get("target_action") or "promote"
        return ["write recovery.signal and the recovery settings into postgresql.auto.conf",
                "start the server (log %s) and recover %s, reading WAL from %s"
                % (self.server_log, self.stop_point, self.archive.path),
                {"promote": "wait until recovery ends and the server is promoted",
                 "pause": "wait until replay pauses at the target",
                 "shutdown": "wait until the server shuts down at the target"}[action]]

    def result_base(self):
        return dict(base_backup=public_backup(self.backup), window=public_window(self.window),
                    target=dict(kind=self.kind, value=describe_target(self.kind, self.value),
                                stops=self.stop_point, timeline=self.target_tli),
                    settings=dict(self.settings), data_dir=self.data_dir, wal_archive=self.archive.path,
                    space=self.space, server_log=self.server_log)

    # -- the restore --------------------------------------------------------------------------------
    def _server_running(self):
        if not os.path.isfile(os.path.join(self.data_dir, "PG_VERSION")):
            return False
        rc, _out, _err = self.run(self.as_os_user([self.bin("pg_ctl"), "status", "-D", self.data_dir]), check=False)
        return rc == 0

    def execute(self):
        plan = self.plan()
        result = self.result_base()
        result.update(plan)
        if self.module.check_mode:
            result.update(changed=False, commands=self.commands, duration=round(time.time() - self.started, 3))
            return result
        self.steps_done = []
        try:
            self._restore(plan)
            reached = self._wait()
        except ReplyxError as exc:
            exc.extra.update(forensic_copy=self.forensic_copy, data_dir=self.data_dir, server_log=self.server_log,
                             steps_done=self.steps_done, base_backup=result["base_backup"].get("path"))
            raise
        result.update(changed=True, reached=reached, forensic_copy=self.forensic_copy, steps_done=self.steps_done,
                      commands=self.commands, duration=round(time.time() - self.started, 3))
        return result

    def _restore(self, plan):
        self._stop_server(plan)
        self._put_back(plan)
        self._configure_and_start()

    def _stop_server(self, plan):
        if plan["server_running"]:
            timeout = str(int(self.params.get("timeout") or 3600))
            self.run(self.as_os_user([self.bin("pg_ctl"), "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t",
                                      timeout]), verb="stop", obj="the server on %s" % self.data_dir)
            self.steps_done.append("stopped the server")

    def _put_back(self, plan):
        """Move the data directory aside and extract the base backup into a new one."""
        if plan["forensic_copy"]:
            os.makedirs(self.forensic_dir, mode=0o700, exist_ok=True)
            shutil.move(self.data_dir, plan["forensic_copy"])
            self.forensic_copy = plan["forensic_copy"]
            self.steps_done.append("moved %s to %s" % (self.data_dir, self.forensic_copy))
        elif os.path.isdir(self.data_dir):
            os.rmdir(self.data_dir)  # empty
        os.makedirs(self.data_dir, mode=0o700)
        backup = self.backup
        if backup["layout"] == "plain":
            shutil.copytree(backup["path"], self.data_dir, symlinks=True, dirs_exist_ok=True)
        else:
            tar = self.module.get_bin_path("tar", required=True)
            self.run([tar, "-x", "--no-same-owner", "-f", backup["base_tar"], "-C", self.data_dir],
                     verb="extract", obj="base backup %s" % backup["base_tar"])
            if backup["wal_tar"]:
                wal_dir = os.path.join(self.data_dir, "pg_wal")
                if not os.path.isdir(wal_dir):
                    os.makedirs(wal_dir)
                self.run([tar, "-x", "--no-same-owner", "-f", backup["wal_tar"], "-C", wal_dir],
                         verb="extract", obj="base backup WAL %s" % backup["wal_tar"])
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"):
            path = os.path.join(self.data_dir, stale)
            if os.path.lexists(path):
                os.unlink(path)
        self.steps_done.append("restored base backup %s into %s" % (backup["path"], self.data_dir))

    def _configure_and_start(self):
        """recovery.signal and the recovery settings, ownership, then start the server in recovery."""
        pw = pwd.getpwnam(self.os_user) if os.geteuid() == 0 else None
        auto_conf = os.path.join(self.data_dir, "postgresql.auto.conf")
        text = ""
        if os.path.isfile(auto_conf):
            with open(auto_conf) as fh:
                text = fh.read()
        header = "replyx.rollback.%s %s: recovery to %s" % (
            self.module_name, self.stamp, describe_target(self.kind, self.value))
        with open(auto_conf, "w") as fh:
            fh.write(rewrite_auto_conf(text, self.settings, header))
        with open(os.path.join(self.data_dir, "recovery.signal"), "w") as fh:
            fh.write("")
        log_dir = os.path.dirname(self.server_log)
        if not os.path.isdir(log_dir):
            os.makedirs(log_dir, mode=0o700)
        open(self.server_log, "a").close()
        os.chmod(self.data_dir, 0o700)
        if pw is not None:
            _chown_tree(self.data_dir, pw.pw_uid, pw.pw_gid)
            for path in (log_dir, self.server_log):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.steps_done.append("wrote recovery.signal and recovery settings")
        self.run(self.as_os_user([self.bin("pg_ctl"), "start", "-D", self.data_dir, "-l", self.server_log, "-W"]),
                 verb="start", obj="the server on %s" % self.data_dir)
        self.steps_done.append("started the server in recovery")

    def _read_log(self):
        try:
            with open(self.server_log, "r", errors="replace") as fh:
                return fh.read()
        except (IOError, OSError):
            return ""

    def _log_tail(self, lines=15):
        return "\n".join(self._read_log().strip().splitlines()[-lines:])

    def _settings(self):
        settings = connection_settings(self.params)
        if self.params.get("server_port"):
            settings["login_port"] = self.params["server_port"]
        return settings

    def _wait(self):
        action = self.params.get("target_action") or "promote"
        deadline = time.time() + int(self.params.get("timeout") or 3600)
        began = time.time()
        pg_ctl = self.bin("pg_ctl")
        settings = self._settings()
        last_error = None
        while True:
            log = self._read_log()
            rc, _o, _e = self.module.run_command(self.as_os_user([pg_ctl, "status", "-D", self.data_dir]))
            running = rc == 0
            parsed = parse_server_log(log)
            if not running:
                if action == "shutdown" and parsed["shut_down"]:
                    return self._reached(None, parsed, action)
                if re.search(r"\b(FATAL|PANIC)\b", log) or time.time() - began > 15:
                    raise CommandFailure("the server stopped during recovery; server log %s:\n%s"
                                         % (self.server_log, self._log_tail()), verb="recover",
                                         obj="data directory %s" % self.data_dir)
            elif action != "shutdown":
                try:
                    conn = _pgquery.connect(settings, connect_timeout=3)
                except ConnectionFailure as exc:
                    conn, last_error = None, exc.reason
                if conn is not None:
                    try:
                        if action == "promote":
                            done = not _pgquery.fetch_one(conn, "SELECT pg_is_in_recovery() AS r")["r"]
                        else:
                            done = _pgquery.fetch_one(
                                conn, "SELECT pg_get_wal_replay_pause_state() AS s")["s"] == "paused"
                        if done:
                            return self._reached(conn, parse_server_log(self._read_log()), action)
                    finally:
                        conn.close()
            if time.time() > deadline:
                raise CommandFailure("recovery did not finish within %s s (last connection error: %s); the server is "
                                     "left running; server log %s:\n%s"
                                     % (self.params.get("timeout"), last_error, self.server_log, self._log_tail()),
                                     verb="recover", obj="data directory %s" % self.data_dir)
            time.sleep(0.5)

    def _reached(self, conn, parsed, action):
        reached = dict(promoted=action == "promote", paused=action == "pause", shut_down=action == "shutdown",
                       recovery_stop=parsed.get("recovery_stop"), redo_done_lsn=parsed.get("redo_done_lsn"))
        if conn is not None:
            row = _pgquery.fetch_one(conn, "SELECT pg_last_wal_replay_lsn()::text AS lsn, "
                                           "pg_last_xact_replay_timestamp() AS ts")
            reached["lsn"] = row["lsn"]
            reached["timestamp"] = format_time(row["ts"]) if row["ts"] is not None else None
            if action == "promote":
                row = _pgquery.fetch_one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn()) AS f")
                reached["timeline"] = int(row["f"][:8], 16)
                reached["replay_timeline"] = expected_tli(self.chain, segno_of(parse_lsn(reached["lsn"]),
                                                                               self.archive.seg_size),
                                                          self.archive.seg_size)
                for sql in ["ALTER SYSTEM RESET %s" % k for k in RECOVERY_KEYS if k.startswith(("recovery_target",
                                                                                                "restore_command"))]:
                    _pgquery.execute(conn, sql, verb="clean up", obj="recovery settings")
                    self.commands.append(sql)
                _pgquery.execute(conn, "SELECT pg_reload_conf()", verb="reload", obj="configuration")
            else:
                reached["timeline"] = expected_tli(self.chain, segno_of(parse_lsn(reached["lsn"]),
                                                                        self.archive.seg_size),
                                                   self.archive.seg_size)
        else:
            rc, out, _err = self.run([self.bin("pg_controldata"), "-D", self.data_dir], env=dict(LC_ALL="C"),
                                     verb="read", obj="pg_control")
            control = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
            control = dict((k.strip(), v.strip()) for k, v in control.items())
            lsn = control.get("Minimum recovery ending location")
            if not lsn or parse_lsn(lsn) == 0:
                lsn = control.get("Latest checkpoint's REDO location")
            reached["lsn"] = lsn
            tli = control.get("Min recovery ending loc's timeline") or "0"
            reached["timeline"] = int(tli) or int(control.get("Latest checkpoint's TimeLineID") or 0)
            reached["timestamp"] = None
        if reached.get("timestamp") is None and parsed.get("last_transaction_time"):
            try:
                reached["timestamp"] = format_time(parse_time(parsed["last_transaction_time"]))
            except InputError:
                reached["timestamp"] = parsed["last_transaction_time"]
        if parsed.get("new_timeline"):
            reached["timeline"] = parsed["new_timeline"] if action == "promote" else reached["timeline"]
        return reached


def _chown_tree(root, uid, gid):
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _dir_size(root):
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def run_pitr_restore(module):
    """The module's one call: preflight, then either the plan (check mode) or the restore."""
    return PitrRestore(module).preflight().execute()
