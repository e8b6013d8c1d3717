# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small psycopg 3 helpers: connect with typed errors, run a query, fetch rows as dicts.

Connection settings come from ``_pg.connection_settings()``; the password travels in the keyword
arguments, never in a message. Errors are the collection's typed errors, so ``main()`` turns them
into one ``fail_json`` with the house message shape.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import traceback

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure, ConnectionFailure, InputError, SafetyRefusal)
from ansible_collections.replyx.rollback.plugins.module_utils._pg import psycopg_kwargs

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
    from psycopg import sql as pgsql
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - reported through missing_required_lib
    psycopg = None
    pgsql = None
    dict_row = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

# libpq wraps the server's message: 'connection to server at "h", port 1 failed: FATAL:  reason'.
_SERVER_REASON = re.compile(r"(?:FATAL|ERROR):\s+(.*)", re.S)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def require_psycopg(module):
    """fail_json with Ansible's standard message when psycopg 3 is not installed on the target."""
    if psycopg is None:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("psycopg (version 3)"), exception=PSYCOPG_IMPORT_ERROR)


def describe(settings):
    """'host:port/db' for messages; never the password."""
    host = settings.get("login_unix_socket") or settings.get("login_host")
    return "PostgreSQL at %s:%s/%s" % (host, settings.get("login_port"), settings.get("login_db"))


def connection_reason(exc):
    """The useful part of a psycopg connection error ('password authentication failed for user "x"')."""
    text = str(exc).strip()
    match = _SERVER_REASON.search(text)
    reason = match.group(1) if match else text
    return " ".join(reason.split())


def connect(settings, autocommit=True, connect_timeout=None):
    """Open a psycopg connection; ConnectionFailure('Failed to connect to PostgreSQL at ...: reason')."""
    if psycopg is None:
        raise ConnectionFailure("the Python library psycopg (version 3) is not installed", verb="connect to",
                                obj=describe(settings))
    kwargs = psycopg_kwargs(settings)
    if connect_timeout is not None:
        kwargs["connect_timeout"] = connect_timeout
    try:
        return psycopg.connect(autocommit=autocommit, row_factory=dict_row, **kwargs)
    except psycopg.Error as exc:
        raise ConnectionFailure(connection_reason(exc), verb="connect to", obj=describe(settings))


def fetch(conn, query, params=None, verb="query", obj="PostgreSQL"):
    """Rows of a query as a list of dicts; CommandFailure on a database error."""
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            if cur.description is None:
                return []
            return cur.fetchall()
    except psycopg.Error as exc:
        raise CommandFailure(" ".join(str(exc).split()), verb=verb, obj=obj, cmd=as_text(conn, query))


def fetch_one(conn, query, params=None, verb="query", obj="PostgreSQL"):
    """The first row (a dict) of a query, or None."""
    rows = fetch(conn, query, params, verb=verb, obj=obj)
    return rows[0] if rows else None


def execute(conn, query, params=None, verb="run", obj="SQL"):
    """Run a statement that returns no rows; returns its text (for executed_commands)."""
    fetch(conn, query, params, verb=verb, obj=obj)
    return as_text(conn, query)


def as_text(conn, query):
    """The SQL text of a str or a psycopg.sql Composable, for executed_commands."""
    if pgsql is not None and isinstance(query, pgsql.Composable):
        try:
            return query.as_string(conn)
        except Exception:  # pragma: no cover - a closed connection
            return repr(query)
    return query


def check_identifier(name, what="identifier"):
    """Refuse anything but a simple SQL identifier (letters, digits, _ and $; at most 63 characters)."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InputError("%r is not a simple identifier (letters, digits, _ and $, starting with a letter or _, "
                         "at most 63 characters)" % (name,), verb="validate", obj=what)
    return name


# ---------------------------------------------------------------------------------------------------
# pg_index_drop: the plan's manual index fallback

_INDEXES_SQL = ("SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = %s AND indexname = ANY(%s) ORDER BY indexname")
_CONSTRAINT_SQL = ("SELECT i.relname AS indexname, c.conname, c.contype FROM pg_constraint c "
                   "JOIN pg_class i ON i.oid = c.conindid JOIN pg_namespace n ON n.oid = i.relnamespace "
                   "WHERE n.nspname = %s AND i.relname = ANY(%s) AND c.contype IN ('p', 'u', 'x') ORDER BY 1")


def drop_indexes(module, settings):
    """DROP INDEX CONCURRENTLY IF EXISTS for each named index that exists, then verify in pg_indexes."""
    params = module.params
    schema = check_identifier(params["schema"], "schema")
    names = [check_identifier(n, "index name") for n in params["indexes"]]
    names = sorted(set(names), key=names.index)
    if int(params.get("lock_timeout") or 0) < 0:
        raise InputError("lock_timeout must be 0 (wait as long as it takes) or a number of seconds (got %s)"
                         % params["lock_timeout"], verb="validate", obj="options")
    queries = []
    conn = connect(settings)
    try:
        queries.append(_INDEXES_SQL)
        before = fetch(conn, _INDEXES_SQL, (schema, names), verb="list", obj="indexes")
        existing = [row["indexname"] for row in before]
        backing = fetch(conn, _CONSTRAINT_SQL, (schema, existing), verb="list", obj="constraint indexes")
        if backing:
            raise SafetyRefusal("%s back constraints (%s); drop the constraint, not the index"
                                % (", ".join(r["indexname"] for r in backing),
                                   ", ".join("%s %s" % (r["contype"], r["conname"]) for r in backing)),
                                verb="drop", obj="indexes in schema %s" % schema)
        result = dict(changed=bool(existing), would_drop=existing, absent=[n for n in names if n not in existing],
                      dropped=[], remaining=existing, indexes_before=before, queries=queries)
        if module._diff:
            result["diff"] = dict(before=dict(indexes=existing), after=dict(indexes=[]))
        if module.check_mode or not existing:
            result["remaining"] = existing if module.check_mode else []
            return result
        if params.get("lock_timeout"):
            queries.append(execute(conn, "SET lock_timeout = %d" % (int(params["lock_timeout"]) * 1000)))
        for name in existing:
            statement = pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(pgsql.Identifier(schema, name))
            queries.append(execute(conn, statement, verb="drop", obj="index %s.%s" % (schema, name)))
            result["dropped"].append(name)
        after = fetch(conn, _INDEXES_SQL, (schema, names), verb="verify", obj="indexes")
        result["remaining"] = [row["indexname"] for row in after]
        if result["remaining"]:
            raise CommandFailure("still in pg_indexes after DROP INDEX: %s" % ", ".join(result["remaining"]),
                                 verb="verify", obj="dropped indexes", dropped=result["dropped"])
        return result
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------
# pg_status: read-only server status

_STATUS_SQL = """
SELECT current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS server_version_num,
       version() AS version,
       pg_is_in_recovery() AS in_recovery,
       current_database() AS database,
       pg_database_size(current_database()) AS database_size,
       pg_size_pretty(pg_database_size(current_database())) AS database_size_pretty,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       current_setting('archive_mode') AS archive_mode,
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout') AS archive_timeout,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS current_lsn,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       to_regclass('public.alembic_version') IS NOT NULL AS has_alembic
"""
_CONNECTIONS_SQL = """
SELECT count(*) AS used,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'idle') AS idle,
       count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_transaction
FROM pg_stat_activity WHERE backend_type = 'client backend'
"""
_ARCHIVER_SQL = """
SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time,
       stats_reset FROM pg_stat_archiver
"""

# Finished segments waiting for the archiver (superuser or pg_monitor; None without the privilege).
_READY_SQL = """
SELECT count(*) AS ready_count, min(modification) AS oldest_ready_time
FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'
"""


def _iso(value):
    return value.isoformat() if value is not None and hasattr(value, "isoformat") else value


def server_status(settings):
    """The status dict of pg_status (read-only)."""
    conn = connect(settings)
    try:
        base = fetch_one(conn, _STATUS_SQL, verb="read", obj="server status")
        conns = fetch_one(conn, _CONNECTIONS_SQL, verb="read", obj="connections")
        archiver = fetch_one(conn, _ARCHIVER_SQL, verb="read", obj="pg_stat_archiver")
        try:
            ready = fetch_one(conn, _READY_SQL, verb="read", obj="pg_wal/archive_status")
        except CommandFailure:
            ready = dict(ready_count=None, oldest_ready_time=None)
        revisions = []
        if base["has_alembic"]:
            rows = fetch(conn, "SELECT version_num FROM public.alembic_version ORDER BY 1", verb="read",
                         obj="alembic_version")
            revisions = [r["version_num"] for r in rows]
    finally:
        conn.close()
    max_conn = base["max_connections"]
    archiving = dict((k, _iso(v)) for k, v in archiver.items())
    archiving.update((k, _iso(v)) for k, v in ready.items())
    archiving.update(archive_mode=base["archive_mode"], archive_timeout=base["archive_timeout"],
                     wal_segment_size=base["wal_segment_size"], current_wal=base["current_wal"],
                     in_recovery=base["in_recovery"],
                     enabled=base["archive_mode"] in ("on", "always"),
                     failing=bool(archiver["failed_count"]) and (
                         archiver["last_archived_time"] is None
                         or (archiver["last_failed_time"] is not None
                             and archiver["last_failed_time"] > archiver["last_archived_time"])))
    return dict(
        changed=False,
        server_version=base["server_version"], server_version_num=base["server_version_num"],
        version=base["version"], in_recovery=base["in_recovery"],
        connections=dict(used=conns["used"], active=conns["active"], idle=conns["idle"],
                         idle_in_transaction=conns["idle_in_transaction"], max_connections=max_conn,
                         superuser_reserved_connections=base["superuser_reserved_connections"],
                         percent=round(100.0 * conns["used"] / max_conn, 1) if max_conn else None),
        database=dict(name=base["database"], size_bytes=base["database_size"],
                      size_pretty=base["database_size_pretty"]),
        alembic_revision=revisions[0] if len(revisions) == 1 else (revisions or None),
        wal_archiving=archiving, current_lsn=base["current_lsn"], timeline=base["checkpoint_timeline"],
    )
