# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The connection options of every replyx.rollback module that talks to PostgreSQL.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server.
    type: str
    default: 127.0.0.1
    aliases: [host]
  login_port:
    description:
      - Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to connect as.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Passed to client tools in the environment (E(PGPASSWORD)), never on the command line,
        and never returned.
    type: str
    aliases: [password]
  login_db:
    description:
      - Database to connect to.
    type: str
    default: postgres
    aliases: [db, database]
  login_unix_socket:
    description:
      - Directory of the server's Unix socket; used instead of O(login_host) when set.
    type: str
  database_url:
    description:
      - A libpq URL C(postgresql://user:password@host:port/dbname), as in the application's C(.env).
      - Its parts override O(login_host), O(login_port), O(login_user), O(login_password) and O(login_db).
      - Query parameters C(host), C(port), C(user), C(password), C(dbname), C(sslmode), C(sslrootcert), C(sslcert),
        C(sslkey) and C(connect_timeout) override the matching options (C(?sslmode=verify-full&sslrootcert=/ca.pem)
        reaches every tool); any other parameter is refused. A host that is a directory is a Unix socket.
      - Treated as a secret.
    type: str
  ssl_mode:
    description:
      - libpq SSL mode; reaches psycopg and every client tool (pg_dump, pg_restore, pg_basebackup, psql).
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - Root certificate file (E(PGSSLROOTCERT)).
    type: path
    aliases: [ssl_rootcert]
  ssl_cert:
    description:
      - Client certificate file (E(PGSSLCERT)).
    type: path
  ssl_key:
    description:
      - Client key file (E(PGSSLKEY)).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection.
    type: int
    default: 10
  pg_bin_dir:
    description:
      - Directory of the PostgreSQL client tools to use, so their major version matches the server's.
      - When unset, the tools are looked up in E(PATH).
    type: path
"""
