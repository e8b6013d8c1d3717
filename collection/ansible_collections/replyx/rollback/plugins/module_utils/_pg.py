# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one PostgreSQL connection argument spec of the collection, and how tools receive it.

libpq tools (pg_dump, pg_restore, pg_basebackup, psql) get every connection setting through the
environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE, ...), so the password never appears in
argv and SSL options reach every tool the same way. psycopg gets the same settings as keywords.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError

try:  # Python 3
    from urllib.parse import parse_qsl, urlsplit, unquote
except ImportError:  # pragma: no cover
    from urlparse import parse_qsl, urlsplit  # type: ignore
    from urllib import unquote  # type: ignore


def pg_common_argument_spec():
    """Connection options shared by every module that talks to PostgreSQL (doc fragment: replyx.rollback.postgres)."""
    return dict(
        login_host=dict(type="str", default="127.0.0.1", aliases=["host"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        login_db=dict(type="str", default="postgres", aliases=["db", "database"]),
        login_unix_socket=dict(type="str"),
        database_url=dict(type="str", no_log=True),
        ssl_mode=dict(type="str", default="prefer",
                      choices=["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        ssl_cert=dict(type="path"),
        ssl_key=dict(type="path", no_log=False),
        connect_timeout=dict(type="int", default=10),
        pg_bin_dir=dict(type="path"),
    )


# database_url query parameters (libpq's URI parameters) and the option each one sets.
URL_PARAMETERS = dict(
    host="login_host", port="login_port", user="login_user", password="login_password", dbname="login_db",
    sslmode="ssl_mode", sslrootcert="ca_cert", sslcert="ssl_cert", sslkey="ssl_key",
    connect_timeout="connect_timeout",
)
SSL_MODES = ("allow", "disable", "prefer", "require", "verify-ca", "verify-full")


def _url_error(msg):
    return InputError("malformed database_url: %s" % msg, verb="parse", obj="database_url")


def _parse_url(url):
    """Split a postgresql:// URL (SQLAlchemy's postgresql+driver:// too) into the collection's options.

    Query parameters are honoured, not dropped: ``?sslmode=verify-full&sslrootcert=/ca.pem`` reaches
    every tool. An unknown parameter is an error naming the supported ones (a silently ignored
    ``sslmode`` would connect without the TLS the operator asked for). A host that is a directory
    (``?host=/run/postgresql`` or ``%2Frun%2Fpostgresql``) is a Unix socket."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise _url_error("%s" % exc)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres") or not (parts.path.strip("/") or "dbname=" in parts.query):
        raise _url_error("expected postgresql://user:password@host:port/dbname[?sslmode=...]")
    try:
        port = parts.port
    except ValueError:
        raise _url_error("the port is not a number")
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):  # IPv6 literal
        host = hostport[1:hostport.find("]")]
    else:
        host = unquote(hostport.rsplit(":", 1)[0] if ":" in hostport else hostport)
    settings = dict(
        login_host=host or None,
        login_port=port,
        login_user=unquote(parts.username) if parts.username else None,
        login_password=unquote(parts.password) if parts.password else None,
        login_db=unquote(parts.path.lstrip("/")) or None,
    )
    seen = set()
    for key, value in query:
        if key not in URL_PARAMETERS:
            raise _url_error("unknown parameter %r (supported: %s)" % (key, ", ".join(sorted(URL_PARAMETERS))))
        if key in seen:
            raise _url_error("parameter %r given twice" % key)
        seen.add(key)
        settings[URL_PARAMETERS[key]] = value
    if "ssl_mode" in settings and settings["ssl_mode"] not in SSL_MODES:
        raise _url_error("sslmode %r is not one of %s" % (settings["ssl_mode"], ", ".join(SSL_MODES)))
    for key in ("login_port", "connect_timeout"):
        value = settings.get(key)
        if value is None or isinstance(value, int):
            continue
        if not str(value).isdigit():
            raise _url_error("%s %r is not a number" % ("the port" if key == "login_port" else key, value))
        settings[key] = int(value)
    if settings.get("login_port") is None:
        settings["login_port"] = 5432
    host = settings.get("login_host")
    if host and host.startswith("/"):
        settings["login_unix_socket"] = host
    return settings


def connection_settings(params, database=None):
    """Resolve the connection options (database_url wins over the separate options) to one dict."""
    keys = ("login_host", "login_port", "login_user", "login_password", "login_db", "login_unix_socket",
            "ssl_mode", "ca_cert", "ssl_cert", "ssl_key", "connect_timeout")
    settings = dict((k, params.get(k)) for k in keys)
    if params.get("database_url"):
        parsed = _parse_url(params["database_url"])
        if parsed.get("login_host") and not parsed.get("login_unix_socket"):
            settings["login_unix_socket"] = None  # the URL names a TCP host: it wins over a socket option
        for key, value in parsed.items():
            if value is not None:
                settings[key] = value
    if database:
        settings["login_db"] = database
    return settings


def pg_env(settings, base=None):
    """Environment for libpq tools. The password travels here, never in argv."""
    env = dict(base if base is not None else os.environ)
    host = settings.get("login_unix_socket") or settings.get("login_host")
    mapping = dict(PGHOST=host, PGPORT=settings.get("login_port"), PGUSER=settings.get("login_user"),
                   PGDATABASE=settings.get("login_db"), PGPASSWORD=settings.get("login_password"),
                   PGSSLMODE=settings.get("ssl_mode"), PGSSLROOTCERT=settings.get("ca_cert"),
                   PGSSLCERT=settings.get("ssl_cert"), PGSSLKEY=settings.get("ssl_key"),
                   PGCONNECT_TIMEOUT=settings.get("connect_timeout"))
    for key, value in mapping.items():
        if value is None or value == "":
            env.pop(key, None)
        else:
            env[key] = str(value)
    env.setdefault("PGAPPNAME", "replyx.rollback")
    return env


def psycopg_kwargs(settings):
    """Keyword arguments for psycopg.connect() carrying the same settings as pg_env()."""
    kwargs = dict(host=settings.get("login_unix_socket") or settings.get("login_host"),
                  port=settings.get("login_port"), user=settings.get("login_user"),
                  password=settings.get("login_password"), dbname=settings.get("login_db"),
                  sslmode=settings.get("ssl_mode"), sslrootcert=settings.get("ca_cert"),
                  sslcert=settings.get("ssl_cert"), sslkey=settings.get("ssl_key"),
                  connect_timeout=settings.get("connect_timeout"), application_name="replyx.rollback")
    return dict((k, v) for k, v in kwargs.items() if v is not None and v != "")


def pg_bin(module, name, pg_bin_dir=None, required=True):
    """Path of a PostgreSQL client tool: from pg_bin_dir when given (the right major version), else PATH."""
    if pg_bin_dir:
        path = os.path.join(pg_bin_dir, name)
        if os.access(path, os.X_OK):
            return path
        if required:
            raise InputError("%s not found in pg_bin_dir %s" % (name, pg_bin_dir), verb="find", obj=name)
        return None
    return module.get_bin_path(name, required=required)
