# -*- coding: utf-8 -*-
"""database_url parsing: every libpq URI parameter the collection supports reaches the tools."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _pg
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError

BASE = dict(login_host="127.0.0.1", login_port=5432, login_user="postgres", login_password=None, login_db="postgres",
            login_unix_socket=None, ssl_mode="prefer", ca_cert=None, ssl_cert=None, ssl_key=None, connect_timeout=10)


@pytest.mark.parametrize("url, expected", [
    ("postgresql://app:s3cret@db.example:6432/chatai",
     dict(login_host="db.example", login_port=6432, login_user="app", login_password="s3cret", login_db="chatai")),
    ("postgresql+psycopg://app:p%40ss%2Fw@db/replyx_prod",
     dict(login_host="db", login_user="app", login_password="p@ss/w", login_db="replyx_prod")),
    ("postgresql://app:pw@db/chatai?sslmode=verify-full&sslrootcert=/etc/ssl/ca%20root.pem",
     dict(login_host="db", ssl_mode="verify-full", ca_cert="/etc/ssl/ca root.pem", login_db="chatai")),
    ("postgresql://app@db/chatai?sslcert=/c.pem&sslkey=/k.pem&connect_timeout=3",
     dict(ssl_cert="/c.pem", ssl_key="/k.pem", connect_timeout=3, login_user="app")),
    ("postgresql://app@%2Frun%2FPostgres%20sock/chatai",
     dict(login_host="/run/Postgres sock", login_unix_socket="/run/Postgres sock", login_user="app")),
    ("postgresql://app@/chatai?host=/run/postgresql&port=5433",
     dict(login_host="/run/postgresql", login_unix_socket="/run/postgresql", login_port=5433)),
    ("postgresql://app@[::1]:5433/chatai", dict(login_host="::1", login_port=5433)),
    ("postgres://app@db/chatai?dbname=other&user=u2", dict(login_db="other", login_user="u2")),
])
def test_url_parameters_reach_the_settings(url, expected):
    settings = _pg.connection_settings(dict(BASE, database_url=url))
    assert dict((k, settings[k]) for k in expected) == expected


@pytest.mark.parametrize("url, message", [
    ("mysql://u:p@h/db", "expected postgresql://"),
    ("postgresql://u:p@h:notaport/db", "the port is not a number"),
    ("postgresql://u@h/db?sslmode=verify", "sslmode 'verify' is not one of allow, disable, prefer"),
    ("postgresql://u@h/db?ssl=true", "unknown parameter 'ssl' (supported: connect_timeout, dbname, host,"),
    ("postgresql://u@h/db?sslmode=require&sslmode=disable", "parameter 'sslmode' given twice"),
    ("postgresql://u@h/db?connect_timeout=-1", "connect_timeout '-1' is not a number"),
    ("postgresql://u@h/db?port=x", "the port 'x' is not a number"),
    ("postgresql://u@h/", "expected postgresql://"),
])
def test_bad_urls_are_refused_with_what_is_wrong(url, message):
    with pytest.raises(InputError) as err:
        _pg.connection_settings(dict(BASE, database_url=url))
    assert message in str(err.value)
    assert "malformed database_url" in str(err.value)


def test_the_url_ssl_options_reach_the_tools_environment():
    url = "postgresql://app:pw@db/chatai?sslmode=verify-full&sslrootcert=/ca.pem"
    settings = _pg.connection_settings(dict(BASE, database_url=url))
    env = _pg.pg_env(settings, base={})
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/ca.pem" and env["PGHOST"] == "db"
    kwargs = _pg.psycopg_kwargs(settings)
    assert kwargs["sslmode"] == "verify-full" and kwargs["sslrootcert"] == "/ca.pem"


def test_a_url_with_a_tcp_host_wins_over_a_socket_option():
    settings = _pg.connection_settings(dict(BASE, login_unix_socket="/tmp", database_url="postgresql://a@db/x"))
    assert _pg.pg_env(settings, base={})["PGHOST"] == "db"
