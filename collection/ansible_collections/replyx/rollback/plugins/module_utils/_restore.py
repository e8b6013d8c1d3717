# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore: restore a verified logical backup, fully or table by table, after a forensic backup.

Order, always: load the manifest -> verify its checksum -> confirm -> the target database exists
-> forensic backup of the current state -> act -> compare row counts with the manifest.
Table restores run as one psql transaction (drop/delete + the backup's SQL), so a failure leaves
the tables as they were.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import tempfile

from ansible_collections.replyx.rollback.plugins.module_utils._backup import (
    Backup, backup_argument_spec, connect, parse_toc, run, scan_plain, toc_extensions, tool_env, utcnow)
from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure, InputError, SafetyRefusal)
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import load_manifest, verify_manifest
from ansible_collections.replyx.rollback.plugins.module_utils._pg import connection_settings, pg_bin

try:
    import psycopg
    from psycopg import sql as psql_sql
    DRIVER_ERRORS = (psycopg.Error,)
except ImportError:  # pragma: no cover - connect() reports the missing library
    psql_sql = None
    DRIVER_ERRORS = ()

CONNECTION_KEYS = ("login_host", "login_port", "login_user", "login_password", "login_unix_socket", "database_url",
                   "ssl_mode", "ca_cert", "ssl_cert", "ssl_key", "connect_timeout", "pg_bin_dir")
SKIP_EXTENSIONS = ("plpgsql",)


def restore_argument_spec():
    """Options of pg_restore beyond the connection spec."""
    return dict(
        backup=dict(type="path", required=True),
        mode=dict(type="str", default="full", choices=["full", "tables", "schema_only"]),
        target_database=dict(type="str"),
        confirm=dict(type="bool", default=False),
        tables=dict(type="list", elements="str", default=[]),
        data_only=dict(type="bool", default=True),
        jobs=dict(type="int", default=1),
        no_owner=dict(type="bool", default=False),
        owner=dict(type="str"),
        forensic_backup=dict(type="bool", default=True),
        forensic_dest=dict(type="path"),
        verify_row_counts=dict(type="bool", default=True),
        maintenance_work_mem=dict(type="str", default="1GB"),
    )


MEMORY_SETTING = re.compile(r"^[0-9]+\s*(kB|MB|GB|TB)?$")


def restore_session_options(value):
    """PGOPTIONS for the restore sessions: index builds (pgvector hnsw above all) dominate a restore and
    run several times faster with a large maintenance_work_mem; it applies to these sessions only."""
    if value in (None, ""):
        return None
    if not MEMORY_SETTING.match(value):
        raise InputError("maintenance_work_mem %r is not a PostgreSQL memory setting such as 512MB or 1GB" % value,
                         verb="restore", obj="database")
    return "-c maintenance_work_mem=%s" % value.replace(" ", "")


def split_table(name):
    schema, dot, rel = name.partition(".")
    return (schema, rel) if dot else (None, name)


def resolve_tables(requested, entries):
    """Requested names (``t`` or ``schema.t``) -> schema-qualified tables present in the backup."""
    present = [(e["schema"], e["tag"]) for e in entries if e["type"] == "TABLE"]
    resolved, missing = [], []
    for name in requested:
        schema, rel = split_table(name)
        hits = [(s, t) for s, t in present if t == rel and (schema is None or s == schema)]
        if len(hits) > 1:
            raise InputError("table %s is ambiguous (%s); qualify it with its schema"
                             % (name, ", ".join("%s.%s" % h for h in hits)), verb="restore", obj="tables")
        if not hits:
            missing.append(name)
        else:
            resolved.append("%s.%s" % hits[0])
    if missing:
        raise InputError("not in the backup: %s" % ", ".join(missing), verb="restore", obj="tables")
    return resolved


BLOCK_RE = re.compile(r"^-- (?:Data for )?Name: (?P<name>.*?); Type: (?P<type>.*?); Schema: (?P<schema>.*?);", re.M)


def schema_blocks(script):
    """{(type, schema, name): sql} from a pg_restore script (its ``-- Name: ...; Type: ...`` headers)."""
    blocks = {}
    matches = list(BLOCK_RE.finditer(script))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(script)
        blocks[(match.group("type"), match.group("schema"), match.group("name"))] = script[match.end():end]
    return blocks


def select_entries(entries, tables, data_only, blocks=None):
    """TOC lines that restore ``tables``: their data, or (data_only=False) their whole definition.

    With definitions: the tables, their data, defaults, constraints, triggers, indexes, comments, ACLs,
    their sequences, and the foreign keys of other tables that reference them.
    """
    wanted = set(tables)
    names = set(t.split(".", 1)[1] for t in tables)
    chosen = []
    blocks = blocks or {}

    def qualified(entry, name):
        return "%s.%s" % (entry["schema"], name) in wanted

    def sql_of(entry):
        return blocks.get((entry["type"], entry["schema"], entry["tag"]), "")

    refs = [re.compile(r"(?:ON (?:ONLY )?|REFERENCES |OWNED BY |ALTER TABLE (?:ONLY )?)%s(?:[ (.]|$)"
                       % re.escape(t), re.M) for t in wanted]
    sequences = set()
    if not data_only:
        for entry in entries:
            if entry["type"] in ("SEQUENCE OWNED BY", "SEQUENCE") and any(r.search(sql_of(entry)) for r in refs):
                sequences.add((entry["schema"], entry["tag"]))
    for entry in entries:
        typ, tag = entry["type"], entry["tag"]
        first = tag.split(" ", 1)[0]
        if typ == "TABLE DATA":
            keep = qualified(entry, tag)
        elif data_only:
            keep = False
        elif typ == "TABLE":
            keep = qualified(entry, tag)
        elif typ in ("DEFAULT", "CONSTRAINT", "TRIGGER"):
            keep = qualified(entry, first)
        elif typ == "FK CONSTRAINT":
            keep = qualified(entry, first) or any(r.search(sql_of(entry)) for r in refs)
        elif typ == "INDEX":
            keep = any(r.search(sql_of(entry)) for r in refs)
        elif typ in ("SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET"):
            keep = (entry["schema"], tag) in sequences
        elif typ in ("COMMENT", "ACL"):
            obj = tag.split(" ", 1)[1] if " " in tag else ""
            keep = tag.startswith(("TABLE ", "COLUMN ")) and obj.split(".", 1)[0] in names and \
                qualified(entry, obj.split(".", 1)[0])
        else:
            keep = False
        if keep:
            chosen.append(entry["line"])
    return chosen


def restore_argv(pg_restore, path, database, jobs=1, no_owner=False, schema_only=False):
    argv = [pg_restore, "--dbname=%s" % database, "--exit-on-error", "--no-password"]
    if jobs > 1:
        argv.append("--jobs=%d" % jobs)
    if no_owner:
        argv.append("--no-owner")
    if schema_only:
        argv.append("--schema-only")
    argv.append(path)
    return argv


def psql_file_argv(psql, path, database, single_transaction=False, commands=()):
    argv = [psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1", "--dbname=%s" % database]
    if single_transaction:
        argv.append("--single-transaction")
    for command in commands:
        argv.append("--command=%s" % command)
    argv.append("--file=%s" % path)
    return argv


class Restore(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.check_mode = module.check_mode
        self.commands = []
        self.queries = []
        self.steps = []
        self.mode = self.params["mode"]

    # -- entry point
    def run(self):
        params = self.params
        manifest = load_manifest(params["backup"])
        manifest = verify_manifest(manifest)
        self.steps.append("verified backup %s (sha256 %s)" % (manifest["path"], manifest["sha256"]))
        if manifest.get("kind") != "logical":
            raise InputError("it is a %s backup; use replyx.rollback.pg_pitr_restore" % manifest.get("kind"),
                             verb="restore", obj="backup %s" % manifest["path"])
        self.manifest = manifest
        self.fmt = manifest["format"]
        self.database = params.get("target_database") or manifest.get("database")
        self.obj = "database %s" % self.database if self.mode != "tables" else "tables %s in database %s" % (
            ", ".join(params["tables"]), self.database)
        self._validate()
        if not params["confirm"] and not self.check_mode:
            raise SafetyRefusal("confirm: true is required for mode=%s (%s)" % (
                self.mode, "it drops and recreates the database" if self.mode != "tables"
                else "it replaces the tables' rows"), verb="restore", obj=self.obj)

        self.settings = connection_settings(params)
        maint_db = self.settings["login_db"]
        if maint_db == self.database:
            maint_db = "postgres"
        self.admin_settings = connection_settings(params, database=maint_db)
        self.target_settings = connection_settings(params, database=self.database)
        self.env = tool_env(self.target_settings)
        session_options = restore_session_options(params.get("maintenance_work_mem"))
        if session_options:
            self.env["PGOPTIONS"] = session_options
        self._check_database()

        bin_dir = params.get("pg_bin_dir")
        self.pg_restore = pg_bin(self.module, "pg_restore", bin_dir)
        self.psql = pg_bin(self.module, "psql", bin_dir)
        self.entries = []
        if self.fmt == "plain":
            dummy, extensions, complete = scan_plain(manifest["path"])
        else:
            out, dummy = self._run([self.pg_restore, "--list", manifest["path"]], "read", "backup %s"
                                   % manifest["path"], record=False)
            self.entries = parse_toc(out)
            extensions = toc_extensions(self.entries)
        self.extensions = [e for e in extensions if e not in SKIP_EXTENSIONS]
        if self.mode == "tables":
            self.tables = resolve_tables(params["tables"], self.entries)
        else:
            self.tables = sorted((manifest.get("tables") or {}).keys())

        forensic = self._forensic()
        if self.mode == "tables":
            self._restore_tables()
        else:
            self._restore_database()
        counts, mismatches = ({}, {}) if self.check_mode else self._count()
        result = dict(changed=not self.check_mode, mode=self.mode, database=self.database, backup=manifest,
                      forensic_backup=forensic, tables=counts, extensions=self.extensions,
                      commands=self.commands, queries=self.queries, steps=self.steps)
        if mismatches:
            raise CommandFailure("row counts differ from the backup's manifest: %s (forensic backup: %s)" % (
                ", ".join("%s %s != %s" % (t, got, want) for t, (got, want) in sorted(mismatches.items())),
                (forensic or {}).get("path")), verb="verify", obj=self.obj, mismatches=mismatches,
                tables=counts)
        result["msg"] = ("check mode: would restore %s from %s" if self.check_mode else "restored %s from %s") % (
            self.obj, manifest["path"])
        return result

    # -- checks
    def _validate(self):
        params, obj = self.params, "database %s" % self.database
        if not self.database:
            raise InputError("the manifest names no database; set target_database", verb="restore", obj=obj)
        if params["jobs"] < 1:
            raise InputError("jobs must be at least 1", verb="restore", obj=obj)
        if self.mode == "tables":
            if not params["tables"]:
                raise InputError("mode=tables needs the tables option", verb="restore", obj=obj)
            if self.fmt == "plain":
                raise InputError("mode=tables needs a custom or directory format backup, not plain SQL",
                                 verb="restore", obj=obj)
        elif params["tables"]:
            raise InputError("the tables option is for mode=tables", verb="restore", obj=obj)
        if self.mode == "schema_only" and self.fmt == "plain":
            raise InputError("mode=schema_only needs a custom or directory format backup, not plain SQL",
                             verb="restore", obj=obj)

    def _check_database(self):
        conn = connect(self.admin_settings, "restore", self.obj)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, "
                            "current_setting('server_version_num')::int FROM pg_database WHERE datname = %s",
                            (self.database,))
                row = cur.fetchone()
                if row is None:
                    raise InputError('database "%s" does not exist' % self.database, verb="restore", obj=self.obj)
                self.db_owner, self.db_encoding, self.db_collate, self.db_ctype, self.server_num = row
                self.db_provider = "c"
                if self.server_num >= 150000:
                    cur.execute("SELECT datlocprovider FROM pg_database WHERE datname = %s", (self.database,))
                    self.db_provider = cur.fetchone()[0]
        finally:
            conn.close()

    # -- helpers
    def _run(self, argv, verb, obj, record=True, check_stderr=True):
        if record:
            self.commands.append(list(argv))
        if self.check_mode and record:
            return "", ""
        return run(self.module, argv, verb, obj, self.env, check_stderr=check_stderr)

    def _sql(self, conn, statements):
        with conn.cursor() as cur:
            for stmt in statements:
                text = stmt.as_string(conn) if hasattr(stmt, "as_string") else stmt
                self.queries.append(text)
                if not self.check_mode:
                    cur.execute(stmt)

    def _forensic(self):
        if not self.params["forensic_backup"]:
            self.steps.append("forensic backup skipped (forensic_backup=false)")
            return None
        dest = self.params.get("forensic_dest") or os.path.dirname(self.manifest["path"])
        params = dict((k, v.get("default")) for k, v in backup_argument_spec().items())
        params.update((k, self.params.get(k)) for k in CONNECTION_KEYS)
        # Uncompressed: the forensic copy is taken while the service is down, and gzip made it the
        # slowest step of a restore in the benchmark (docs/benchmarks.md); disk is cheaper than minutes.
        params.update(login_db=self.database, database_url=None, dest=dest, kind="logical", format="custom",
                      compress="0", label="forensic-%s" % utcnow().strftime("%Y%m%dT%H%M%SZ"))
        if self.params.get("database_url"):
            for key in ("login_host", "login_port", "login_user", "login_password"):
                params[key] = self.settings.get(key)
        result = Backup(self.module, params=params, forensic=True).run()
        self.commands.extend(result["commands"])
        verb = "would take" if self.check_mode else "took"
        self.steps.append("%s forensic backup of %s to %s" % (verb, self.database, result["path"]))
        return result["backup"]

    # -- full and schema_only
    def _restore_database(self):
        conn = connect(self.admin_settings, "restore", self.obj)
        ident = psql_sql.Identifier(self.database)
        owner = self.params.get("owner") or self.db_owner
        create = psql_sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}").format(
            ident, psql_sql.Identifier(owner), psql_sql.Literal(self.db_encoding))
        if self.db_provider == "c":
            create = psql_sql.SQL("{} LC_COLLATE {} LC_CTYPE {}").format(
                create, psql_sql.Literal(self.db_collate), psql_sql.Literal(self.db_ctype))
        try:
            self._sql(conn, [
                psql_sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident),
                psql_sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = {} AND pid <> pg_backend_pid()").format(psql_sql.Literal(self.database)),
                psql_sql.SQL("DROP DATABASE {}{}").format(
                    ident, psql_sql.SQL(" WITH (FORCE)" if self.server_num >= 130000 else "")),
                create,
            ])
        except Exception:
            if not self.check_mode:
                try:
                    self._sql(conn, [psql_sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident)])
                except Exception:  # pylint: disable=broad-except
                    pass  # the database may be gone already: report the first error
            raise
        finally:
            conn.close()
        self.steps.append("dropped and recreated database %s (owner %s)" % (self.database, owner))
        if self.extensions:
            if self.check_mode:
                self.queries.extend('CREATE EXTENSION IF NOT EXISTS "%s"' % e for e in self.extensions)
            else:
                conn = connect(self.target_settings, "restore", self.obj)
                try:
                    self._sql(conn, [psql_sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(psql_sql.Identifier(e))
                                     for e in self.extensions])
                finally:
                    conn.close()
            self.steps.append("created extensions %s" % ", ".join(self.extensions))
        path = self.manifest["path"]
        if self.fmt == "plain":
            argv = psql_file_argv(self.psql, path, self.database)
        else:
            jobs = self.params["jobs"]
            argv = restore_argv(self.pg_restore, path, self.database, jobs=jobs, no_owner=self.params["no_owner"],
                                schema_only=self.mode == "schema_only")
        try:
            self._run(argv, "restore", self.obj)
        except CommandFailure as exc:
            exc.reason += " (the database was recreated and is incomplete; the forensic backup holds the state " \
                          "before the restore)"
            raise
        self.steps.append("restored %s%s" % ("the schema of " if self.mode == "schema_only" else "", path))

    # -- tables
    def _restore_tables(self):
        data_only = self.params["data_only"]
        workdir = None if self.check_mode else tempfile.mkdtemp(prefix="replyx-restore-")
        try:
            base = workdir or "/tmp/replyx-restore-PLAN"
            list_file, script = os.path.join(base, "restore.list"), os.path.join(base, "restore.sql")
            blocks = {}
            if not data_only:
                out, dummy = self._run([self.pg_restore, "--schema-only", "--file=-", self.manifest["path"]],
                                       "read", "backup %s" % self.manifest["path"], record=False)
                blocks = schema_blocks(out)
            lines = select_entries(self.entries, self.tables, data_only, blocks)
            if workdir:
                with open(list_file, "w") as fh:
                    fh.write("\n".join(lines) + "\n")
            argv = [self.pg_restore, "--use-list=%s" % list_file, "--file=%s" % script]
            if data_only:
                argv.append("--data-only")
            if self.params["no_owner"]:
                argv.append("--no-owner")
            argv.append(self.manifest["path"])
            self._run(argv, "read", "backup %s" % self.manifest["path"])
            conn = None if self.check_mode else connect(self.target_settings, "restore", self.obj)
            try:
                pre = self._table_prelude(conn, data_only)
            finally:
                if conn is not None:
                    conn.close()
            self.queries.extend(pre)
            self._run(psql_file_argv(self.psql, script, self.database, single_transaction=True, commands=pre),
                      "restore", self.obj)
            self.steps.append("%s %s in one transaction" % (
                "replaced the rows of" if data_only else "dropped and recreated", ", ".join(self.tables)))
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _table_prelude(self, conn, data_only):
        """SQL run in the restore transaction before the backup's SQL."""
        def q(name):
            schema, rel = name.split(".", 1)
            return '"%s"."%s"' % (schema.replace('"', '""'), rel.replace('"', '""'))

        if data_only:
            # Foreign-key triggers off inside this transaction only, so rows of the listed tables can be
            # replaced without cascading into (or being blocked by) the tables that reference them.
            return ["SET LOCAL session_replication_role = replica"] + ["DELETE FROM %s" % q(t) for t in self.tables]
        pre = []
        if conn is not None:
            with conn.cursor() as cur:
                cur.execute("WITH t AS (SELECT to_regclass(x) AS oid FROM unnest(%s::text[]) x) "
                            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                            "WHERE contype = 'f' AND confrelid IN (SELECT oid FROM t WHERE oid IS NOT NULL) "
                            "AND conrelid NOT IN (SELECT oid FROM t WHERE oid IS NOT NULL) ORDER BY 1, 2",
                            ([q(t) for t in self.tables],))
                for table, name in cur.fetchall():
                    pre.append('ALTER TABLE %s DROP CONSTRAINT "%s"' % (table, name.replace('"', '""')))
        pre.append("DROP TABLE IF EXISTS %s" % ", ".join(q(t) for t in self.tables))
        return pre

    # -- verification
    def _count(self):
        expected = self.manifest.get("tables") or {}
        tables = self.tables
        counts, mismatches = {}, {}
        if self.mode == "schema_only":
            return counts, mismatches
        conn = connect(self.target_settings, "verify", self.obj)
        try:
            with conn.cursor() as cur:
                for table in tables:
                    schema, rel = table.split(".", 1)
                    cur.execute(psql_sql.SQL("SELECT count(*) FROM {}").format(psql_sql.Identifier(schema, rel)))
                    counts[table] = cur.fetchone()[0]
                    want = expected.get(table)
                    if (self.params["verify_row_counts"] and self.manifest.get("row_counts", "exact") == "exact"
                            and want is not None and want != counts[table]):
                        mismatches[table] = (counts[table], want)
        finally:
            conn.close()
        return counts, mismatches


def run_restore(module):
    """pg_restore's one call: returns the module result dict (raises ReplyxError subclasses)."""
    restore = Restore(module)
    try:
        return restore.run()
    except DRIVER_ERRORS as exc:
        raise CommandFailure(str(exc).strip().splitlines()[0], verb="restore",
                             obj=getattr(restore, "obj", "database"))
