"""pg_index_drop (the plan's manual index fallback) and pg_status (read-only) on real PostgreSQL 18 and 15."""
from __future__ import annotations

import pytest

from pgserver import PgServer, start_version

pytestmark = [pytest.mark.pg]

PLAN_INDEXES = [
    "knowledge_embeddings_embedding_cosine_idx",
    "idx_ai_token_usage_user_created",
    "ix_knowledge_embeddings_user_assistant",
    "ix_dialog_messages_dialog_id",
    "ix_balance_transactions_user_created",
]


@pytest.fixture(scope="module", params=["18", "15"])
def server(request):
    srv = start_version(request.param)
    srv.psql("CREATE DATABASE chatai")
    yield srv
    srv.stop()


def create_plan_indexes(server: PgServer) -> None:
    vector = server.version == "18"
    server.psql(f"""
        {'CREATE EXTENSION IF NOT EXISTS vector;' if vector else ''}
        CREATE TABLE IF NOT EXISTS knowledge_embeddings (id serial PRIMARY KEY, user_id int, assistant_id int,
            {'embedding vector(3)' if vector else 'embedding real[]'});
        CREATE TABLE IF NOT EXISTS ai_token_usage (id serial PRIMARY KEY, user_id int, created_at timestamptz);
        CREATE TABLE IF NOT EXISTS dialog_messages (id serial PRIMARY KEY, dialog_id int, text text);
        CREATE TABLE IF NOT EXISTS balance_transactions (id serial PRIMARY KEY, user_id int, created_at timestamptz);
        INSERT INTO knowledge_embeddings (user_id, assistant_id, embedding)
          SELECT g % 10, g % 7, {"'[1,2,3]'" if vector else "ARRAY[1,2,3]::real[]"} FROM generate_series(1, 200) g;
        INSERT INTO ai_token_usage (user_id, created_at) SELECT g % 10, now() FROM generate_series(1, 200) g;
        INSERT INTO dialog_messages (dialog_id, text) SELECT g % 50, 'm' || g FROM generate_series(1, 500) g;
        INSERT INTO balance_transactions (user_id, created_at) SELECT g % 10, now() FROM generate_series(1, 200) g;
        {'CREATE INDEX knowledge_embeddings_embedding_cosine_idx ON knowledge_embeddings '
         'USING hnsw (embedding vector_cosine_ops);' if vector else
         'CREATE INDEX knowledge_embeddings_embedding_cosine_idx ON knowledge_embeddings (embedding);'}
        CREATE INDEX idx_ai_token_usage_user_created ON ai_token_usage (user_id, created_at);
        CREATE INDEX ix_knowledge_embeddings_user_assistant ON knowledge_embeddings (user_id, assistant_id);
        CREATE INDEX ix_dialog_messages_dialog_id ON dialog_messages (dialog_id);
        CREATE INDEX ix_balance_transactions_user_created ON balance_transactions (user_id, created_at);
    """, dbname="chatai")


def plan_indexes_present(server: PgServer) -> list[str]:
    names = ",".join(f"'{n}'" for n in PLAN_INDEXES)
    out = server.psql(f"SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname IN ({names}) "
                      "ORDER BY 1", dbname="chatai")
    return [line for line in out.splitlines() if line]


def test_index_drop_check_mode_drop_and_idempotence(server, run_module):
    create_plan_indexes(server)
    assert plan_indexes_present(server) == sorted(PLAN_INDEXES)
    args = dict(server.conn_params("chatai"), indexes=PLAN_INDEXES + ["ix_not_there"], lock_timeout=10)

    check = run_module("pg_index_drop", args, check_mode=True, diff=True)
    assert not check["failed"], check.get("msg")
    assert check["changed"] is True and sorted(check["would_drop"]) == sorted(PLAN_INDEXES)
    assert check["absent"] == ["ix_not_there"] and check["dropped"] == []
    assert sorted(check["diff"]["before"]["indexes"]) == sorted(PLAN_INDEXES)
    assert plan_indexes_present(server) == sorted(PLAN_INDEXES)  # nothing dropped

    result = run_module("pg_index_drop", args)
    assert not result["failed"], result.get("msg")
    assert result["changed"] is True and sorted(result["dropped"]) == sorted(PLAN_INDEXES)
    assert result["remaining"] == []
    assert plan_indexes_present(server) == []
    assert any("DROP INDEX CONCURRENTLY IF EXISTS" in q for q in result["queries"])
    # The tables and their other indexes are untouched.
    assert server.psql("SELECT count(*) FROM dialog_messages", dbname="chatai") == "500"
    assert server.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'dialog_messages_pkey'",
                       dbname="chatai") == "1"

    again = run_module("pg_index_drop", args)
    assert not again["failed"] and again["changed"] is False and again["dropped"] == []
    assert sorted(again["absent"]) == sorted(PLAN_INDEXES + ["ix_not_there"])


def test_index_drop_refusals(server, run_module):
    bad = run_module("pg_index_drop", dict(server.conn_params("chatai"), indexes=["ix_a; DROP TABLE users"]))
    assert bad["failed"] and bad["msg"].startswith("Failed to validate index name:")
    assert "not a simple identifier" in bad["msg"]
    server.psql("CREATE TABLE IF NOT EXISTS refusal_t (id int CONSTRAINT refusal_t_pkey PRIMARY KEY)", dbname="chatai")
    pk = run_module("pg_index_drop", dict(server.conn_params("chatai"), indexes=["refusal_t_pkey"]))
    assert pk["failed"] and pk["msg"].startswith("Failed to drop indexes in schema public:")
    assert "back constraints" in pk["msg"]
    assert server.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'refusal_t_pkey'", dbname="chatai") == "1"
    wrong = run_module("pg_index_drop", dict(server.conn_params("chatai"), login_password="wrong",
                                             indexes=["ix_dialog_messages_dialog_id"]))
    assert wrong["failed"] and wrong["msg"].startswith("Failed to connect to PostgreSQL at 127.0.0.1:")
    assert "password authentication failed" in wrong["msg"] and "wrong" not in wrong["msg"].split(":", 1)[0]


def test_status_matches_direct_sql(server, run_module):
    server.psql("CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32) PRIMARY KEY);"
                "DELETE FROM alembic_version; INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6')", dbname="chatai")
    result = run_module("pg_status", server.conn_params("chatai"))
    assert not result["failed"], result.get("msg")
    assert result["changed"] is False
    assert result["server_version_num"] == int(server.psql("SHOW server_version_num"))
    assert result["server_version"] == server.psql("SHOW server_version")
    assert result["server_version"].startswith(server.version)
    assert result["in_recovery"] is False
    conns = result["connections"]
    assert conns["max_connections"] == 40  # tests/pgserver.py sets it
    assert 1 <= conns["used"] <= 5 and conns["active"] >= 1  # the module's own connection is active
    assert conns["percent"] == round(100.0 * conns["used"] / 40, 1)
    assert result["database"]["name"] == "chatai"
    size = int(server.psql("SELECT pg_database_size('chatai')"))
    assert abs(result["database"]["size_bytes"] - size) < 1024 * 1024
    assert result["alembic_revision"] == "a1b2c3d4e5f6"
    archiving = result["wal_archiving"]
    assert archiving["enabled"] is True and archiving["archive_mode"] == "on" and archiving["failing"] is False
    archived = int(server.psql("SELECT archived_count FROM pg_stat_archiver"))
    assert archiving["archived_count"] <= archived
    current = server.psql("SELECT pg_current_wal_lsn()")
    assert result["current_lsn"] and _lsn(result["current_lsn"]) <= _lsn(current)
    assert result["timeline"] == 1
    # Without alembic_version: null.
    other = run_module("pg_status", server.conn_params("postgres"), check_mode=True)
    assert not other["failed"] and other["alembic_revision"] is None and other["changed"] is False


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
