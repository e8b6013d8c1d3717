# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical full restore: a base backup put back into the data directory in place, only the files that
differ (a delta, like pgBackRest --delta), then WAL replayed from the archive (to its end by default).

Built on ``_pitr.PitrRestore`` (backup choice and verification, WAL continuity, the window, the
recovery settings, start and wait); what differs lives here:

- ``backup_index``: {relative path: entry} of the base backup's files (kind, size, sha256), read from
  the backup itself (``base.tar`` + ``pg_wal.tar``, or the plain directory) after the whole backup's
  sha256 was checked against its manifest.
- ``scan_data_dir``: {relative path: entry} of the current data directory (kind and size).
- ``delta_plan``: the decision per path (pure): copy (with the reason), skip, remove, create a directory.
- ``count_rows`` / ``compare_counts``: per-table row counts before and after, and what changed.
- ``PhysicalRestore``: the target is optional (end of the archived WAL), the current data directory is
  copied (not moved) to the forensic directory, and the backup is put back with the delta.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shutil
import tarfile

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    ConnectionFailure, InputError, SafetyRefusal)
from ansible_collections.replyx.rollback.plugins.module_utils._pitr import (
    TARGET_KEYS, PitrRestore, _dir_size, recovery_argument_spec, validate_target)
from ansible_collections.replyx.rollback.plugins.module_utils import _pgquery

_CHUNK = 1024 * 1024
LIST_LIMIT = 500  # paths listed in the result per kind (the counts are always complete)
SKIP_IN_PLAIN = ("backup_manifest",)  # pg_basebackup's own file beside a plain backup, not part of the cluster


def physical_argument_spec():
    spec = recovery_argument_spec()
    spec.update(
        delta=dict(type="bool", default=True),
        forensic_copy=dict(type="bool", default=True),
        row_counts=dict(type="bool", default=True),
    )
    return spec


# ---------------------------------------------------------------------------------------------------
# What the backup holds and what the data directory holds

def _norm(name):
    name = name.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _sha256_stream(fh):
    digest = hashlib.sha256()
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def file_sha256(path):
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


def _tar_entries(tar_path, prefix):
    entries = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                rel = _norm(prefix + member.name) if member.name not in (".", "./") else _norm(prefix)
                if not rel:
                    continue
                if member.isdir():
                    entries[rel] = dict(kind="dir")
                elif member.issym():
                    entries[rel] = dict(kind="link", target=member.linkname)
                elif member.isfile():
                    entries[rel] = dict(kind="file", size=member.size,
                                        sha256=_sha256_stream(tar.extractfile(member)), tar=tar_path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError("cannot read %s (%s); only uncompressed or gzip tar archives are supported"
                         % (tar_path, exc), verb="read", obj="base backup")
    return entries


def backup_index(backup):
    """{rel: {kind, size, sha256, ...}} of every path the base backup restores, pg_wal included."""
    if backup["layout"] == "plain":
        root = backup["path"]
        index = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                rel = _norm(os.path.relpath(full, root))
                index[rel] = dict(kind="link", target=os.readlink(full)) if os.path.islink(full) else dict(kind="dir")
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = _norm(os.path.relpath(full, root))
                if rel in SKIP_IN_PLAIN:
                    continue
                if os.path.islink(full):
                    index[rel] = dict(kind="link", target=os.readlink(full))
                else:
                    index[rel] = dict(kind="file", size=os.path.getsize(full), sha256=file_sha256(full), source=full)
        return index
    index = _tar_entries(backup["base_tar"], "")
    if backup.get("wal_tar"):
        index.setdefault("pg_wal", dict(kind="dir"))
        index.update(_tar_entries(backup["wal_tar"], "pg_wal/"))
    return index


def scan_data_dir(root):
    """{rel: {kind, size}} of the data directory; a directory reached through a link (pg_wal made by
    initdb -X) counts as a directory, so the link itself is kept."""
    found = {}
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        for name in dirnames:
            found[_norm(os.path.relpath(os.path.join(dirpath, name), root))] = dict(kind="dir")
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = _norm(os.path.relpath(full, root))
            if os.path.islink(full):
                found[rel] = dict(kind="link", target=os.readlink(full))
            elif os.path.isfile(full):
                found[rel] = dict(kind="file", size=os.path.getsize(full))
            else:
                found[rel] = dict(kind="other")
    return found


# ---------------------------------------------------------------------------------------------------
# The delta decision (pure)

def copy_reason(want, have, checksum_of, rel, full=False):
    """Why the backup's entry ``want`` must be written over ``have`` (None: it is already equal).
    ``checksum_of(rel)`` is only called when kind and size agree."""
    if full:
        return "full"
    if have is None:
        return "missing"
    if have["kind"] != want["kind"]:
        return "type"
    if want["kind"] == "link":
        return None if have.get("target") == want.get("target") else "link target"
    if have.get("size") != want.get("size"):
        return "size"
    if checksum_of(rel) != want["sha256"]:
        return "checksum"
    return None


def delta_plan(index, current, checksum_of, full=False):
    """The decision for every path. Returns dict(copy=[(rel, reason)], skip=[rel], remove=[rel], mkdir=[rel]).

    Paths of the data directory that are not in the backup are removed (a removed directory takes its
    content with it, so what lies below it is not listed again); a path of the wrong kind is removed
    before the backup's entry is written.
    """
    copy, skip, remove, mkdir = [], [], [], []
    for rel in sorted(index):
        want, have = index[rel], current.get(rel)
        if want["kind"] == "dir":
            if have is None or have["kind"] != "dir":
                if have is not None:
                    remove.append(rel)
                mkdir.append(rel)
            continue
        reason = copy_reason(want, have, checksum_of, rel, full=full)
        if reason is None:
            skip.append(rel)
            continue
        if have is not None and have["kind"] != want["kind"]:
            remove.append(rel)
        copy.append((rel, reason))
    removed_dirs = set(r for r in remove if current[r]["kind"] == "dir")
    for rel in sorted(current):
        if rel in index or rel in remove:
            continue
        parents = rel.split("/")
        if any("/".join(parents[:i]) in removed_dirs for i in range(1, len(parents))):
            continue
        remove.append(rel)
        if current[rel]["kind"] == "dir":
            removed_dirs.add(rel)
    return dict(copy=copy, skip=skip, remove=sorted(remove), mkdir=mkdir)


def delta_summary(plan, index, full=False):
    files = [r for r, e in index.items() if e["kind"] == "file"]
    copied = [r for r, _reason in plan["copy"]]
    reasons = {}
    for _rel, reason in plan["copy"]:
        reasons[reason] = reasons.get(reason, 0) + 1
    return dict(mode="full" if full else "delta", files_in_backup=len(files), copied=len(copied),
                skipped=len([r for r in plan["skip"] if index[r]["kind"] == "file"]), removed=len(plan["remove"]),
                directories_created=len(plan["mkdir"]), reasons=reasons,
                bytes_copied=sum(index[r].get("size", 0) for r in copied),
                bytes_skipped=sum(index[r].get("size", 0) for r in plan["skip"]),
                copied_files=["%s (%s)" % (r, reason) for r, reason in plan["copy"][:LIST_LIMIT]],
                removed_files=plan["remove"][:LIST_LIMIT])


# ---------------------------------------------------------------------------------------------------
# Row counts

def count_rows(settings):
    """{"<database>.<schema>.<table>": rows} for every user table of every database that accepts connections."""
    conn = _pgquery.connect(settings, connect_timeout=5)
    try:
        databases = [r["datname"] for r in _pgquery.fetch(
            conn, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")]
    finally:
        conn.close()
    counts = {}
    for database in databases:
        conn = _pgquery.connect(dict(settings, login_db=database), connect_timeout=5)
        try:
            tables = _pgquery.fetch(conn, "SELECT n.nspname AS s, c.relname AS t, format('%I.%I', n.nspname, "
                                          "c.relname) AS q FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                          "c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
                                          "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                                          "ORDER BY 1, 2")
            for table in tables:
                row = _pgquery.fetch_one(conn, "SELECT count(*) AS n FROM %s" % table["q"], verb="count",
                                         obj="rows of %s.%s" % (database, table["q"]))
                counts["%s.%s.%s" % (database, table["s"], table["t"])] = int(row["n"])
        finally:
            conn.close()
    return counts


def compare_counts(before, after):
    """What the restore changed, table by table: {table: {before, after}} for every difference
    (a table absent on one side has null there)."""
    if before is None or after is None:
        return None
    changes = {}
    for table in sorted(set(before) | set(after)):
        if before.get(table) != after.get(table):
            changes[table] = dict(before=before.get(table), after=after.get(table))
    return changes


# ---------------------------------------------------------------------------------------------------
# The service

class PhysicalRestore(PitrRestore):
    """A full restore in place: forensic copy, delta put-back, WAL replay (to the end by default)."""

    module_name = "pg_physical_restore"

    def __init__(self, module):
        super(PhysicalRestore, self).__init__(module)
        if not self.params.get("server_log"):
            self.server_log = os.path.join(self.data_dir, "log", "replyx-restore-%s.log" % self.stamp)
        self.full = not self.params.get("delta", True)
        self.keep_forensic = self.params.get("forensic_copy", True)
        self.delta = None
        self.counts_before = None
        self.counts_note = None

    def target(self):
        given = [k for k in TARGET_KEYS if self.params.get(k) not in (None, "", False)]
        if given:
            return validate_target(self.params)
        if (self.params.get("target_action") or "promote") != "promote":
            raise InputError("target_action=%s needs a recovery target; without one recovery replays the whole "
                             "archive and promotes" % self.params["target_action"], verb="validate",
                             obj="the recovery target")
        return "end", None

    def _confirm_text(self):
        return ("confirm=true is required: the data directory %s is overwritten with base backup files (%s)"
                % (self.data_dir, "a forensic copy is made first in %s" % self.forensic_dir if self.keep_forensic
                   else "forensic_copy=false: no copy is kept"))

    def _check_space(self):
        super(PhysicalRestore, self)._check_space()
        self.space.pop("forensic_move_bytes", None)
        if not (self.keep_forensic and os.path.isdir(self.data_dir)):
            return
        size = _dir_size(self.data_dir)
        probe = self.forensic_dir
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        stat = os.statvfs(probe)
        free = stat.f_bavail * stat.f_frsize
        same = os.stat(probe).st_dev == os.stat(self.data_dir).st_dev
        need = size + (self.space["required_bytes"] if same else 0)
        self.space["forensic_copy_bytes"] = size
        if free < need:
            raise SafetyRefusal("%d bytes free on the filesystem of %s; the forensic copy of %s needs %d%s (or "
                                "forensic_copy=false)" % (free, probe, self.data_dir, size,
                                                          " beside the restore" if same else ""),
                                verb="check", obj="free disk space")

    def plan(self):
        running = self._server_running()
        has_data = os.path.isdir(self.data_dir) and bool(os.listdir(self.data_dir))
        forensic = None
        if has_data and self.keep_forensic:
            forensic = os.path.join(self.forensic_dir, "%s-%s" % (os.path.basename(self.data_dir), self.stamp))
        steps = []
        if running:
            steps.append("stop the server on %s (pg_ctl stop -m fast)" % self.data_dir)
        if forensic:
            steps.append("copy %s to %s (the forensic copy, kept)" % (self.data_dir, forensic))
        steps.append("%s base backup %s (%s) into %s: %s" % (
            "write" if self.full else "delta-restore", self.backup["path"], self.backup["layout"], self.data_dir,
            "every file" if self.full else "only files whose sha256 differs from the backup's, paths not in the "
                                           "backup removed"))
        steps += self._recovery_steps()
        if self.params.get("row_counts", True):
            steps.append("count the rows of every table before and after, and report what changed")
        return dict(steps=steps, server_running=running, forensic_copy=forensic)

    def execute(self):
        if self.module.check_mode:
            result = super(PhysicalRestore, self).execute()
            index = backup_index(self.backup)
            result["delta"] = delta_summary(self._decide(index), index, self.full)
            result["delta"]["preview"] = True
            return result
        if self.params.get("row_counts", True) and self._server_running():
            try:
                self.counts_before = count_rows(self._settings())
            except ConnectionFailure as exc:
                self.counts_note = "row counts before the restore not read: %s" % exc.reason
        result = super(PhysicalRestore, self).execute()
        result["delta"] = self.delta
        result["row_counts"] = self._counts_after()
        return result

    def _counts_after(self):
        if not self.params.get("row_counts", True):
            return None
        after, note = None, self.counts_note
        if (self.params.get("target_action") or "promote") != "shutdown":
            try:
                after = count_rows(self._settings())
            except ConnectionFailure as exc:
                note = "row counts after the restore not read: %s" % exc.reason
        return dict(before=self.counts_before, after=after, changes=compare_counts(self.counts_before, after),
                    note=note)

    def _decide(self, index):
        def checksum_of(rel):
            return file_sha256(os.path.join(self.data_dir, rel))
        return delta_plan(index, scan_data_dir(self.data_dir), checksum_of, full=self.full)

    def _put_back(self, plan):
        """Forensic copy, then write only what differs from the base backup."""
        if plan["forensic_copy"]:
            os.makedirs(self.forensic_dir, mode=0o700, exist_ok=True)
            shutil.copytree(self.data_dir, plan["forensic_copy"], symlinks=True)
            self.forensic_copy = plan["forensic_copy"]
            self.steps_done.append("copied %s to %s" % (self.data_dir, self.forensic_copy))
        if not os.path.isdir(self.data_dir):
            os.makedirs(self.data_dir, mode=0o700)
        index = backup_index(self.backup)
        decision = self._decide(index)
        apply_delta(self.data_dir, index, decision)
        self.delta = delta_summary(decision, index, self.full)
        self.steps_done.append("restored base backup %s into %s: %d files copied, %d unchanged, %d paths removed"
                               % (self.backup["path"], self.data_dir, self.delta["copied"], self.delta["skipped"],
                                  self.delta["removed"]))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _write_from(src_fh, dest):
    tmp = dest + ".replyx-restore"
    with open(tmp, "wb") as out:
        shutil.copyfileobj(src_fh, out, _CHUNK)
    os.chmod(tmp, 0o600)
    os.replace(tmp, dest)


def apply_delta(root, index, decision):
    """Carry out a delta_plan in root: remove, create directories, write the files (from the tars or the
    plain backup), then the links."""
    for rel in sorted(decision["remove"], key=lambda r: r.count("/"), reverse=True):
        _remove(os.path.join(root, rel))
    for rel in decision["mkdir"]:
        path = os.path.join(root, rel)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700)
    wanted = dict((rel, index[rel]) for rel, _reason in decision["copy"])
    by_tar = {}
    for rel, entry in wanted.items():
        parent = os.path.dirname(os.path.join(root, rel))
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700)
        if entry["kind"] == "link":
            _remove(os.path.join(root, rel))
            os.symlink(entry["target"], os.path.join(root, rel))
        elif entry.get("source"):
            with open(entry["source"], "rb") as fh:
                _write_from(fh, os.path.join(root, rel))
        else:
            by_tar.setdefault(entry["tar"], set()).add(rel)
    for tar_path, rels in by_tar.items():
        prefix = "pg_wal/" if os.path.basename(tar_path).startswith("pg_wal.tar") else ""
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                rel = _norm(prefix + member.name)
                if member.isfile() and rel in rels:
                    _write_from(tar.extractfile(member), os.path.join(root, rel))


def run_physical_restore(module):
    """The module's one call: preflight, then either the plan (check mode) or the restore."""
    return PhysicalRestore(module).preflight().execute()
