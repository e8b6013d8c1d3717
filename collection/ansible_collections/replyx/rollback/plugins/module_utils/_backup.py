# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_backup: logical (pg_dump) and physical (pg_basebackup) backups with a verified manifest.

A backup is written to ``<name>.partial``, checked (tool exit code *and* stderr, then
``pg_restore --list`` or the plain dump's completion comment, or ``pg_verifybackup``), made private
(0600/0700), checksummed, renamed to ``<name>`` and only then described by ``<name>.manifest.json``.
A backup without a manifest is never complete. On any failure the partial is removed.

After pg_dump, every file it wrote is read exactly once: in parallel threads that hash it (one sha256
per file, ``sha256_scheme: files``) and chmod it 0600 through the open file, while the main thread runs
``pg_restore --list`` and the row counts in the dump's snapshot. A plain dump is scanned for its
completion comment in the same read that hashes it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import hashlib
import shutil
import tarfile
import threading
import time

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure, ConnectionFailure, InputError, ReplyxError, SafetyRefusal)
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import (
    MANIFEST_SUFFIX, SCHEME_FILES, files_digest, hash_file, hash_files, load_manifest, verify_manifest,
    write_manifest)
from ansible_collections.replyx.rollback.plugins.module_utils._pg import (
    connection_settings, pg_bin, pg_env, psycopg_kwargs)

try:
    import psycopg
    from psycopg import sql as psql_sql
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
    DRIVER_ERRORS = (psycopg.Error,)
except ImportError as _exc:  # pragma: no cover - reported by the module
    psycopg = None
    psql_sql = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = _exc
    DRIVER_ERRORS = ()

EXTENSIONS = dict(custom="dump", directory="dir", plain="sql")
LOGICAL_FORMATS = ("custom", "directory", "plain")
PHYSICAL_FORMATS = ("tar", "plain")
PLAIN_COMPLETE = "-- PostgreSQL database dump complete"
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
STDERR_FAILURE_RE = re.compile(r"(pg_dump: error|pg_basebackup: error|pg_restore: error|\bFATAL\b|\bERROR\b)")
OPTION_KEYS = ("tables", "exclude_tables", "schemas", "exclude_schemas", "jobs", "compress")
SNAPSHOT_PLACEHOLDER = "SNAPSHOT-EXPORTED-AT-RUN-TIME"


def backup_argument_spec():
    """Options of pg_backup beyond the connection spec."""
    return dict(
        dest=dict(type="path", required=True),
        kind=dict(type="str", default="logical", choices=["logical", "physical"]),
        format=dict(type="str", choices=["custom", "directory", "plain", "tar"]),
        label=dict(type="str"),
        jobs=dict(type="int", default=1),
        compress=dict(type="str"),
        tables=dict(type="list", elements="str", default=[]),
        exclude_tables=dict(type="list", elements="str", default=[]),
        schemas=dict(type="list", elements="str", default=[]),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        row_counts=dict(type="str", default="exact", choices=["exact", "estimate", "none"]),
        wal_method=dict(type="str", default="stream", choices=["stream", "fetch"]),
        checkpoint=dict(type="str", default="fast", choices=["fast", "spread"]),
        keep_last=dict(type="int"),
        max_age_days=dict(type="float"),
    )


# --------------------------------------------------------------------------------------------------
# small helpers

def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def stderr_failure(stderr):
    """The first stderr line that says the tool failed (pg_dump can exit 0 after errors), or None."""
    for line in (stderr or "").splitlines():
        if STDERR_FAILURE_RE.search(line):
            return line.strip()
    return None


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def make_private(path):
    """0600 for files, 0700 for directories, recursively."""
    if os.path.isdir(path):
        os.chmod(path, 0o700)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o700)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o600)
    else:
        os.chmod(path, 0o600)


def connect(settings, verb, obj, dbname=None, autocommit=True):
    """psycopg connection; errors become ConnectionFailure / InputError (database missing)."""
    if not HAS_PSYCOPG:
        raise InputError("the Python library psycopg (3) is required on the managed host (%s)"
                         % PSYCOPG_IMPORT_ERROR, verb=verb, obj=obj)
    kwargs = psycopg_kwargs(settings)
    if dbname:
        kwargs["dbname"] = dbname
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        if re.search(r'database "[^"]*" does not exist', text):
            raise InputError('database "%s" does not exist' % kwargs.get("dbname"), verb=verb, obj=obj)
        if "password authentication failed" in text or "no password supplied" in text:
            raise ConnectionFailure("password authentication failed for user %s" % kwargs.get("user"),
                                    verb=verb, obj=obj)
        last = text.splitlines()[-1] if text else "error"
        raise ConnectionFailure("cannot connect to %s:%s (%s)" % (kwargs.get("host"), kwargs.get("port"), last),
                                verb=verb, obj=obj)


def run(module, argv, verb, obj, env, check_stderr=True, data=None):
    """Run a tool (argument list, no shell); CommandFailure on rc != 0 or an error line on stderr."""
    kwargs = dict(environ_update=env)
    if data is not None:
        kwargs["data"] = data
        kwargs["binary_data"] = False
    rc, out, err = module.run_command(argv, **kwargs)
    bad = stderr_failure(err) if check_stderr else None
    if rc != 0 or bad:
        reason = bad or (err.strip().splitlines()[-1] if err and err.strip() else "exit code %d" % rc)
        tool = os.path.basename(argv[0])
        if not reason.startswith(tool):
            reason = "%s: %s" % (tool, reason)
        raise CommandFailure(reason, verb=verb, obj=obj,
                             cmd=list(argv), rc=rc, stdout=out, stderr=err)
    return out, err


def tool_env(settings):
    """Only the libpq variables the tools need (the password among them) on top of the module's env."""
    env = pg_env(settings, base={})
    return env


def tool_version(module, path):
    rc, out, dummy = module.run_command([path, "--version"])
    return out.strip() if rc == 0 else None


# --------------------------------------------------------------------------------------------------
# naming, argv

def backup_name(database, kind, fmt, stamp):
    if kind == "physical":
        return "base-%s" % stamp
    return "%s-%s.%s" % (database, stamp, EXTENSIONS[fmt])


def resolve_format(params):
    kind = params["kind"]
    fmt = params.get("format")
    if kind == "logical":
        fmt = fmt or "custom"
        if fmt not in LOGICAL_FORMATS:
            raise InputError("format %s is for physical backups; logical backups use one of %s"
                             % (fmt, ", ".join(LOGICAL_FORMATS)), verb="plan", obj="backup")
    else:
        fmt = fmt or "tar"
        if fmt not in PHYSICAL_FORMATS:
            raise InputError("format %s is for logical backups; physical backups use one of %s"
                             % (fmt, ", ".join(PHYSICAL_FORMATS)), verb="plan", obj="backup")
    return fmt


def validate(params, fmt):
    obj = "backup"
    if params.get("label") is not None and not LABEL_RE.match(params["label"]):
        raise InputError("label %r must be letters, digits, '.', '_' or '-' (up to 100)" % params["label"],
                         verb="plan", obj=obj)
    if params["jobs"] < 1:
        raise InputError("jobs must be at least 1", verb="plan", obj=obj)
    if params["jobs"] > 1 and not (params["kind"] == "logical" and fmt == "directory"):
        raise InputError("jobs > 1 needs kind=logical and format=directory", verb="plan", obj=obj)
    if params["kind"] == "physical":
        for key in ("tables", "exclude_tables", "schemas", "exclude_schemas"):
            if params.get(key):
                raise InputError("%s applies to logical backups only" % key, verb="plan", obj=obj)
    if params.get("keep_last") is not None and params["keep_last"] < 1:
        raise InputError("keep_last must be at least 1", verb="plan", obj=obj)
    if params.get("max_age_days") is not None and params["max_age_days"] <= 0:
        raise InputError("max_age_days must be positive", verb="plan", obj=obj)


def dump_argv(pg_dump, partial, fmt, params, snapshot=None):
    """pg_dump argument list. Connection settings (and the password) travel in the environment."""
    argv = [pg_dump, "--format=%s" % fmt, "--file=%s" % partial, "--no-password"]
    if fmt == "directory" and params.get("jobs", 1) > 1:
        argv.append("--jobs=%d" % params["jobs"])
    if params.get("compress"):
        argv.append("--compress=%s" % params["compress"])
    if snapshot:
        argv.append("--snapshot=%s" % snapshot)
    for opt, key in (("--table", "tables"), ("--exclude-table", "exclude_tables"),
                     ("--schema", "schemas"), ("--exclude-schema", "exclude_schemas")):
        for value in params.get(key) or []:
            argv.append("%s=%s" % (opt, value))
    return argv


def basebackup_argv(pg_basebackup, partial, fmt, params, label):
    argv = [pg_basebackup, "--pgdata=%s" % partial, "--format=%s" % ("t" if fmt == "tar" else "p"),
            "--wal-method=%s" % params.get("wal_method", "stream"),
            "--checkpoint=%s" % params.get("checkpoint", "fast"), "--label=%s" % label, "--no-password"]
    if params.get("compress") and fmt == "tar":
        argv.append("--compress=%s" % params["compress"])
    return argv


def verify_argv(pg_restore, path):
    return [pg_restore, "--list", path]


# --------------------------------------------------------------------------------------------------
# TOC and physical backup metadata

TOC_RE = re.compile(r"^\d+;\s+\d+\s+\d+\s+(?P<rest>.*)$")
TOC_TYPES = ("TABLE DATA", "FK CONSTRAINT", "SEQUENCE OWNED BY", "SEQUENCE SET", "MATERIALIZED VIEW DATA",
             "EXTENSION", "TABLE", "INDEX", "CONSTRAINT", "DEFAULT", "SEQUENCE", "COMMENT", "SCHEMA",
             "TRIGGER", "VIEW", "FUNCTION", "ACL", "TYPE")


def parse_toc(text):
    """Entries of ``pg_restore --list``: dicts with line, type, schema, tag (best effort, comments skipped)."""
    entries = []
    for line in text.splitlines():
        match = TOC_RE.match(line.strip())
        if not match:
            continue
        rest = match.group("rest")
        for typ in TOC_TYPES:
            if rest.startswith(typ + " "):
                fields = rest[len(typ) + 1:].split(" ")
                schema = fields[0] if fields else "-"
                tag = " ".join(fields[1:-1]) if len(fields) > 2 else (fields[1] if len(fields) > 1 else "")
                entries.append(dict(line=line, type=typ, schema=schema, tag=tag))
                break
        else:
            entries.append(dict(line=line, type=rest.split(" ")[0], schema="", tag=""))
    return entries


def toc_tables(entries):
    """schema-qualified tables whose data is in the archive."""
    return ["%s.%s" % (e["schema"], e["tag"]) for e in entries if e["type"] == "TABLE DATA"]


def toc_extensions(entries):
    return [e["tag"] for e in entries if e["type"] == "EXTENSION"]


PLAIN_COPY_RE = re.compile(r"^COPY (?P<table>[^ (]+) \(")
PLAIN_EXT_RE = re.compile(r"^CREATE EXTENSION IF NOT EXISTS (?P<ext>\"?[\w-]+\"?)")


def scan_plain(path, digest=None, mode=None):
    """Tables with data (COPY targets), extensions, and whether the completion comment is there.

    ``digest``: a hashlib object fed every byte of the file in the same read (one pass, not two);
    ``mode``: chmod the open file to it first."""
    tables, extensions, complete = [], [], False
    with open(path, "rb") as fh:
        if mode is not None:
            os.fchmod(fh.fileno(), mode)
        for raw in fh:
            if digest is not None:
                digest.update(raw)
            if raw.startswith(b"COPY "):
                m = PLAIN_COPY_RE.match(raw.decode("utf-8", "replace"))
                if m:
                    tables.append(m.group("table").replace('"', ""))
            elif raw.startswith(b"CREATE EXTENSION"):
                m = PLAIN_EXT_RE.match(raw.decode("utf-8", "replace"))
                if m:
                    extensions.append(m.group("ext").strip('"'))
            elif raw.startswith(PLAIN_COMPLETE.encode("ascii")):
                complete = True
    return tables, extensions, complete


def private_dirs(path):
    """0700 for a directory and every directory below it (files are chmodded by the hashing pass)."""
    os.chmod(path, 0o700)
    for dirpath, dirnames, dummy in os.walk(path):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o700)


class BackgroundChecksum(object):
    """Hash (and chmod 0600) the files of a finished dump in threads while the caller verifies and counts.

    ``result()`` joins and returns (sha256, size, files); it re-raises the thread's error. Always call
    ``join()`` before removing the path (the error path of the caller does)."""

    def __init__(self, path):
        self.path = path
        self.value = None
        self.error = None
        self.seconds = None
        self.thread = threading.Thread(target=self._run, name="replyx-checksum")
        self.thread.daemon = True

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        t0 = time.time()
        try:
            if os.path.isdir(self.path):
                private_dirs(self.path)
                files = hash_files(self.path, file_mode=0o600)
                self.value = (files_digest(files), sum(f["size"] for f in files.values()), files)
            else:
                size, hexdigest = hash_file(self.path, 0o600)
                self.value = (hexdigest, size, None)
        except BaseException as exc:  # re-raised by result()
            self.error = exc
        self.seconds = round(time.time() - t0, 3)

    def join(self):
        if self.thread.is_alive() or self.thread.ident is not None:
            self.thread.join()

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def parse_backup_label(text):
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "START WAL LOCATION":
            m = re.match(r"([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", value)
            if m:
                info["start_lsn"], info["start_wal_file"] = m.group(1), m.group(2)
        elif key == "CHECKPOINT LOCATION":
            info["checkpoint_lsn"] = value.strip()
        elif key == "START TIME":
            info["start_time_server"] = value.strip()
        elif key == "START TIMELINE":
            info["timeline"] = int(value.strip())
        elif key == "LABEL":
            info["backup_label"] = value.strip()
    return info


def lsn_to_int(lsn):
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def wal_file_name(timeline, lsn, segment_size):
    """Name of the WAL segment file holding ``lsn`` (as pg_walfile_name does, for the given timeline)."""
    segno = lsn_to_int(lsn) // segment_size
    per_id = 0x100000000 // segment_size
    return "%08X%08X%08X" % (timeline, segno // per_id, segno % per_id)


def physical_metadata(path, fmt, segment_size):
    """start/stop LSN, timeline and WAL file names from backup_label and backup_manifest."""
    info = {}
    label_text = None
    if fmt == "plain":
        label_path = os.path.join(path, "backup_label")
        if os.path.isfile(label_path):
            with open(label_path, "r") as fh:
                label_text = fh.read()
    else:
        for name in sorted(os.listdir(path)):
            if name.startswith("base.tar"):
                try:
                    with tarfile.open(os.path.join(path, name), "r:*") as tar:
                        member = tar.extractfile("backup_label")
                        label_text = member.read().decode("utf-8", "replace") if member else None
                except (tarfile.TarError, KeyError, OSError):
                    label_text = None
                break
    if label_text:
        info.update(parse_backup_label(label_text))
    manifest_file = os.path.join(path, "backup_manifest")
    if os.path.isfile(manifest_file):
        with open(manifest_file, "r") as fh:
            try:
                ranges = json.load(fh).get("WAL-Ranges") or []
            except ValueError:
                ranges = []
        if ranges:
            info.setdefault("start_lsn", ranges[0].get("Start-LSN"))
            info["stop_lsn"] = ranges[-1].get("End-LSN")
            info["timeline"] = ranges[-1].get("Timeline", info.get("timeline"))
    if info.get("stop_lsn") and info.get("timeline") and segment_size:
        # End-LSN points just past the last record: the segment holding the byte before it.
        stop = lsn_to_int(info["stop_lsn"]) - 1
        info["stop_wal_file"] = wal_file_name(info["timeline"], "%X/%X" % (stop >> 32, stop & 0xFFFFFFFF),
                                              segment_size)
    return info


# --------------------------------------------------------------------------------------------------
# retention

def select_for_deletion(manifests, keep_last=None, max_age_days=None, now=None, protected=()):
    """Which manifests retention removes. ``manifests`` are dicts with name, created and verified.

    Keeps the ``keep_last`` newest, drops those older than ``max_age_days``; never deletes the names in
    ``protected`` nor the newest verified backup. Returns the manifests to delete, oldest first.
    """
    if keep_last is None and max_age_days is None:
        return []
    now = now or utcnow()
    ordered = sorted(manifests, key=lambda m: (m["created"], m["name"]), reverse=True)
    newest_verified = next((m["name"] for m in ordered if m.get("verified")), None)
    keep = set(protected)
    if newest_verified:
        keep.add(newest_verified)
    doomed = []
    for index, manifest in enumerate(ordered):
        if manifest["name"] in keep:
            continue
        too_many = keep_last is not None and index >= keep_last
        too_old = (max_age_days is not None
                   and (now - parse_iso(manifest["created"])).total_seconds() > max_age_days * 86400)
        if too_many or too_old:
            doomed.append(manifest)
    return list(reversed(doomed))


def sibling_manifests(dest, database, kind):
    """Manifests in dest of the same database (logical) or of any database (physical) and kind."""
    found = []
    if not os.path.isdir(dest):
        return found
    for name in sorted(os.listdir(dest)):
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            manifest = load_manifest(os.path.join(dest, name))
        except ReplyxError:
            continue
        if manifest.get("kind") != kind or manifest.get("forensic"):
            continue
        if kind == "logical" and manifest.get("database") != database:
            continue
        if not manifest.get("created"):
            continue
        found.append(manifest)
    return found


def apply_retention(module, dest, database, kind, keep_last, max_age_days, protected, check_mode):
    candidates = sibling_manifests(dest, database, kind)
    # Verify newest first until one verifies: that one is never deleted.
    for manifest in sorted(candidates, key=lambda m: (m["created"], m["name"]), reverse=True):
        try:
            verify_manifest(manifest)
            manifest["verified"] = True
            break
        except ReplyxError:
            manifest["verified"] = False
    for manifest in candidates:
        manifest.setdefault("verified", False)
    doomed = select_for_deletion(candidates, keep_last, max_age_days, protected=protected)
    deleted = []
    for manifest in doomed:
        deleted.append(manifest["path"])
        if not check_mode:
            remove_path(manifest["path"])
            os.unlink(manifest["manifest_path"])
    return deleted


# --------------------------------------------------------------------------------------------------
# the backup itself

class Backup(object):
    """One pg_backup run. ``run()`` returns the module result."""

    def __init__(self, module, params=None, forensic=False):
        self.module = module
        self.params = params if params is not None else module.params
        self.forensic = forensic
        self.check_mode = module.check_mode
        self.settings = connection_settings(self.params)
        self.database = self.settings["login_db"]
        self.kind = self.params["kind"]
        self.fmt = resolve_format(self.params)
        validate(self.params, self.fmt)
        self.dest = os.path.abspath(self.params["dest"])
        self.env = tool_env(self.settings)
        self.commands = []
        self.timings = {}
        self.checksum = None
        self.obj = "database %s" % self.database if self.kind == "logical" else "cluster %s:%s" % (
            self.settings.get("login_unix_socket") or self.settings.get("login_host"), self.settings.get("login_port"))
        self.verb = "back up"

    # -- entry point
    def run(self):
        label = self.params.get("label")
        stamp = label or utcnow().strftime("%Y%m%dT%H%M%SZ")
        name = backup_name(self.database, self.kind, self.fmt, stamp)
        path = os.path.join(self.dest, name)
        if not label:
            n = 2
            while os.path.lexists(path) or os.path.lexists(path + MANIFEST_SUFFIX):
                name = backup_name(self.database, self.kind, self.fmt, "%s-%d" % (stamp, n))
                path = os.path.join(self.dest, name)
                n += 1

        existing = self._existing(path, label)
        if existing is not None:
            deleted = self._retention(protected=(existing["name"],))
            return dict(changed=bool(deleted), backup=existing,
                        path=existing["path"], manifest_path=existing["manifest_path"], commands=[],
                        deleted=deleted, msg="a verified backup labelled %s already exists" % label)

        self._check_dest()
        tools = self._tools()
        partial = path + ".partial"
        if self.kind == "logical":
            planned = [dump_argv(tools["pg_dump"], partial, self.fmt, self.params,
                                 SNAPSHOT_PLACEHOLDER if self.params["row_counts"] == "exact" else None)]
            if self.fmt != "plain":
                planned.append(verify_argv(tools["pg_restore"], partial))
        else:
            planned = [basebackup_argv(tools["pg_basebackup"], partial, self.fmt, self.params, label or name)]
            if tools.get("pg_verifybackup"):
                planned.append([tools["pg_verifybackup"], "--no-parse-wal" if self.fmt == "tar" else "--quiet",
                                partial])
        if self.check_mode:
            # Prove the connection works (read-only), change nothing.
            conn = connect(self.settings, self.verb, self.obj)
            conn.close()
            would_delete = self._retention(protected=(name,), check_mode=True)
            return dict(changed=True, commands=planned, path=path, manifest_path=path + MANIFEST_SUFFIX,
                        backup=dict(name=name, path=path, database=self.database, kind=self.kind, format=self.fmt,
                                    label=label), deleted=would_delete,
                        msg="check mode: would write %s" % path)

        t0 = time.time()
        manifest = self._make(path, partial, name, label, tools)
        deleted = self._retention(protected=(name,))
        self.timings["total_s"] = round(time.time() - t0, 3)
        return dict(changed=True, backup=manifest, path=path, manifest_path=manifest["manifest_path"],
                    commands=self.commands, deleted=deleted, timings=self.timings,
                    msg="backup %s written and verified" % path)

    # -- steps
    def _existing(self, path, label):
        """A labelled backup that already exists: its verified manifest, or a refusal if it does not verify."""
        if not label:
            return None
        mpath = path + MANIFEST_SUFFIX
        if not os.path.lexists(path) and not os.path.exists(mpath):
            return None
        if not os.path.exists(mpath):
            raise SafetyRefusal("%s exists without a manifest (an interrupted run?); move it away or use another "
                                "label" % path, verb=self.verb, obj=self.obj)
        try:
            return verify_manifest(mpath)
        except ReplyxError as exc:
            raise SafetyRefusal("a backup labelled %s exists but does not verify (%s); move it away or use another "
                                "label" % (label, exc.reason), verb=self.verb, obj=self.obj)

    def _check_dest(self):
        dest = self.dest
        if not os.path.isdir(dest):
            if os.path.lexists(dest):
                raise InputError("destination %s is not a directory" % dest, verb=self.verb, obj=self.obj)
            if self.check_mode:
                parent = os.path.dirname(dest)
                while parent and not os.path.isdir(parent):
                    parent = os.path.dirname(parent)
                if not os.access(parent, os.W_OK):
                    raise InputError("destination %s is not writable" % dest, verb=self.verb, obj=self.obj)
                return
            try:
                os.makedirs(dest, 0o700)
            except OSError as exc:
                raise InputError("destination %s is not writable (%s)" % (dest, exc.strerror),
                                 verb=self.verb, obj=self.obj)
        probe = os.path.join(dest, ".replyx-write-probe-%d" % os.getpid())
        try:
            with open(probe, "w") as fh:
                fh.write("probe")
            os.unlink(probe)
        except (IOError, OSError) as exc:
            raise InputError("destination %s is not writable (%s)" % (dest, exc.strerror or exc),
                             verb=self.verb, obj=self.obj)

    def _tools(self):
        bin_dir = self.params.get("pg_bin_dir")
        tools = {}
        if self.kind == "logical":
            tools["pg_dump"] = pg_bin(self.module, "pg_dump", bin_dir)
            tools["pg_restore"] = pg_bin(self.module, "pg_restore", bin_dir)
        else:
            tools["pg_basebackup"] = pg_bin(self.module, "pg_basebackup", bin_dir)
            verifier = pg_bin(self.module, "pg_verifybackup", bin_dir, required=False)
            if verifier and (self.fmt == "plain" or self._major(verifier) >= 18):
                tools["pg_verifybackup"] = verifier
        return tools

    def _major(self, tool):
        version = tool_version(self.module, tool) or ""
        match = re.search(r"(\d+)(?:\.\d+)?", version.split(")")[-1])
        return int(match.group(1)) if match else 0

    def _server_facts(self, conn):
        facts = {}
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
                        "to_regclass('alembic_version') IS NOT NULL")
            version, version_num, segsize, has_alembic = cur.fetchone()
            facts.update(server_version=version, server_version_num=version_num, wal_segment_size=segsize)
            facts["alembic_revision"] = None
            if has_alembic:
                cur.execute("SELECT version_num FROM alembic_version")
                rows = [r[0] for r in cur.fetchall()]
                facts["alembic_revision"] = rows[0] if len(rows) == 1 else (rows or None)
        return facts

    def _make(self, path, partial, name, label, tools):
        started = utcnow()
        t0 = time.time()
        remove_path(partial)  # our own leftover from an interrupted run
        self.checksum = None
        snapshot_conn = connect(self.settings, self.verb, self.obj, autocommit=False)
        try:
            try:
                with snapshot_conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                facts = self._server_facts(snapshot_conn)
                snapshot = None
                if self.kind == "logical" and self.params["row_counts"] == "exact":
                    with snapshot_conn.cursor() as cur:
                        cur.execute("SELECT pg_export_snapshot()")
                        snapshot = cur.fetchone()[0]
                self.timings["connect_s"] = round(time.time() - t0, 3)
                extra = self._produce(partial, tools, label or name, snapshot, facts, snapshot_conn)
            except psycopg.Error as exc:
                raise ConnectionFailure("lost the connection (%s)" % str(exc).strip().splitlines()[0],
                                        verb=self.verb, obj=self.obj)
            finally:
                try:
                    snapshot_conn.rollback()
                    snapshot_conn.close()
                except psycopg.Error:
                    pass
            if self.checksum is None:  # physical backups: hashed after pg_verifybackup
                self.checksum = BackgroundChecksum(partial).start()
            t_wait = time.time()
            digest, size, files = self.checksum.result()
            self.timings["checksum_wait_s"] = round(time.time() - t_wait, 3)
            self.timings["checksum_s"] = self.checksum.seconds
            os.rename(partial, path)
        except BaseException:
            if self.checksum is not None:
                self.checksum.join()  # never remove files a hashing thread still reads
            remove_path(partial)
            raise
        finished = utcnow()
        manifest = dict(
            id=name, name=name, path=path, database=self.database if self.kind == "logical" else None,
            kind=self.kind, format=self.fmt, size_bytes=size, sha256=digest, sha256_scheme=SCHEME_FILES,
            server_version=facts["server_version"], server_version_num=facts["server_version_num"],
            alembic_revision=facts["alembic_revision"], label=label, created=iso(finished),
            started=iso(started), duration_s=round(time.time() - t0, 3), verified=True,
            forensic=self.forensic, host=self.settings.get("login_unix_socket") or self.settings.get("login_host"),
            port=self.settings.get("login_port"),
        )
        if files is not None:
            manifest["files"] = files
        manifest.update(extra)
        try:
            manifest["manifest_path"] = write_manifest(path, manifest)
        except BaseException:
            remove_path(path)
            raise
        return manifest

    def _produce(self, partial, tools, label, snapshot, facts, conn):
        if self.kind == "physical":
            return self._basebackup(partial, tools, label, facts)
        argv = dump_argv(tools["pg_dump"], partial, self.fmt, self.params, snapshot)
        self.commands.append(argv)
        t0 = time.time()
        run(self.module, argv, self.verb, self.obj, self.env)
        t1 = time.time()
        self.timings["dump_s"] = round(t1 - t0, 3)
        if self.fmt == "plain":
            # One read: the completion comment, the COPY targets and the sha256 together.
            digest = hashlib.sha256()
            tables, extensions, complete = scan_plain(partial, digest, mode=0o600)
            if not complete:
                raise CommandFailure("the plain dump does not end with '%s' (truncated)" % PLAIN_COMPLETE,
                                     verb=self.verb, obj=self.obj)
            done = BackgroundChecksum(partial)
            done.value, done.seconds = (digest.hexdigest(), os.path.getsize(partial), None), round(time.time() - t1, 3)
            self.checksum = done
        else:
            # The files are hashed (and made private) in threads while pg_restore --list reads the TOC and
            # the rows are counted in the snapshot: the dump is read once, and the three overlap.
            self.checksum = BackgroundChecksum(partial).start()
            argv = verify_argv(tools["pg_restore"], partial)
            self.commands.append(argv)
            out, dummy = run(self.module, argv, "verify", "backup %s" % partial, self.env)
            entries = parse_toc(out)
            if not entries:
                raise CommandFailure("pg_restore --list found no entries", verb="verify", obj="backup %s" % partial)
            tables, extensions = toc_tables(entries), toc_extensions(entries)
        self.timings["verify_s"] = round(time.time() - t1, 3)
        extra = dict(tool_version=tool_version(self.module, tools["pg_dump"]), row_counts=self.params["row_counts"],
                     options=dict((k, self.params.get(k)) for k in OPTION_KEYS))
        extra["pg_dump_version"] = extra["tool_version"]
        extra["extensions"] = extensions
        t2 = time.time()
        extra["tables"] = self._row_counts(conn, tables)
        self.timings["row_counts_s"] = round(time.time() - t2, 3)
        return extra

    def _row_counts(self, conn, tables):
        mode = self.params["row_counts"]
        counts = {}
        if mode == "none" or not tables:
            return dict((t, None) for t in tables)
        with conn.cursor() as cur:
            for table in tables:
                schema, dummy, rel = table.partition(".")
                ident = psql_sql.Identifier(schema, rel)
                if mode == "exact":
                    cur.execute(psql_sql.SQL("SELECT count(*) FROM {}").format(ident))
                else:
                    cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                                (psql_sql.Identifier(schema, rel).as_string(conn),))
                counts[table] = int(cur.fetchone()[0])
        return counts

    def _basebackup(self, partial, tools, label, facts):
        argv = basebackup_argv(tools["pg_basebackup"], partial, self.fmt, self.params, label)
        self.commands.append(argv)
        run(self.module, argv, self.verb, self.obj, self.env)
        stop_time = utcnow()
        if tools.get("pg_verifybackup"):
            argv = [tools["pg_verifybackup"], "--no-parse-wal" if self.fmt == "tar" else "--quiet", partial]
            self.commands.append(argv)
            run(self.module, argv, "verify", "backup %s" % partial, self.env)
        extra = physical_metadata(partial, self.fmt, facts.get("wal_segment_size"))
        extra.update(tool_version=tool_version(self.module, tools["pg_basebackup"]), stop_time=iso(stop_time),
                     wal_segment_size=facts.get("wal_segment_size"), wal_method=self.params.get("wal_method"),
                     tables={}, extensions=[])
        return extra

    def _retention(self, protected, check_mode=None):
        keep_last, max_age = self.params.get("keep_last"), self.params.get("max_age_days")
        if self.forensic or (keep_last is None and max_age is None):
            return []
        return apply_retention(self.module, self.dest, self.database, self.kind, keep_last, max_age, protected,
                               self.check_mode if check_mode is None else check_mode)


def run_backup(module):
    """pg_backup's one call: returns the module result dict (raises ReplyxError subclasses)."""
    backup = Backup(module)
    try:
        return backup.run()
    except DRIVER_ERRORS as exc:
        raise CommandFailure(str(exc).strip().splitlines()[0], verb=backup.verb, obj=backup.obj)
