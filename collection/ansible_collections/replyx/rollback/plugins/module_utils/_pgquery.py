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
    CommandFailure, ConnectionFailure, InputError)
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
