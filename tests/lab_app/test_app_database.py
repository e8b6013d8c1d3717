"""Migrations up and down for real, the seed, the indexes and the vector query plan (PostgreSQL 18)."""
from __future__ import annotations

import json

import pytest

from tests.lab_app.conftest import PYTHON, alembic, run_app_cmd
from tests.lab_app.test_app_static import CHAIN, PLAN_INDEXES

pytestmark = pytest.mark.pg

CORE = {"users", "assistants", "dialogs", "dialog_messages", "knowledge_embeddings"}
BILLING = {"balance_transactions", "ai_token_usage"}


def tables(db) -> set[str]:
    out = db.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return set(out.split()) - {"alembic_version"}


def indexes(db) -> set[str]:
    return set(db.sql("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'").split())


def columns(db, table: str) -> set[str]:
    return set(db.sql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'").split())


def current(db) -> str:
    return db.sql("SELECT coalesce(max(version_num), '') FROM alembic_version")


@pytest.fixture(scope="module")
def seeded(pg):
    """A database taken up to head, down to base, up to head again, then seeded at scale 1."""
    db = pg.database()
    alembic(db.url, "upgrade", "head")
    assert current(db) == "a1b2c3d4e5f6"
    alembic(db.url, "downgrade", "base")
    assert tables(db) == set() and current(db) == ""
    assert db.sql("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == "1"
    alembic(db.url, "upgrade", "head")
    proc = run_app_cmd([str(PYTHON), "scripts/seed.py", "--scale", "1"], DATABASE_URL=db.url)
    db.seed_summary = json.loads(proc.stdout.strip().splitlines()[-1])
    db.seed_stdout = proc.stdout
    return db


def test_schema_at_head(seeded):
    assert current(seeded) == "a1b2c3d4e5f6"
    assert tables(seeded) == CORE | BILLING | {"uploaded_files"}
    assert {"widget_version", "ai_model"} <= columns(seeded, "assistants")
    assert seeded.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'knowledge_embeddings'::regclass AND attname = 'embedding'") == "vector(384)"
    assert seeded.sql("SELECT column_default || ' ' || is_nullable FROM information_schema.columns "
                      "WHERE table_name = 'assistants' AND column_name = 'widget_version'") == "1 NO"


def test_indexes_at_head(seeded):
    names = indexes(seeded)
    assert set(PLAN_INDEXES) <= names
    assert "knowledge_embeddings_embedding_cosine_idx" in names
    assert len([n for n in names if n.startswith(("ix_", "idx_"))]) >= 30
    assert "hnsw" in seeded.sql("SELECT indexdef FROM pg_indexes "
                                "WHERE indexname = 'knowledge_embeddings_embedding_cosine_idx'")
    assert "vector_cosine_ops" in seeded.sql("SELECT indexdef FROM pg_indexes "
                                             "WHERE indexname = 'knowledge_embeddings_embedding_cosine_idx'")


def test_seed_counts_and_users(seeded):
    summary = seeded.seed_summary
    assert summary["seeded"] is True and summary["scale"] == 1
    counts = summary["counts"]
    assert counts["users"] == 25 and counts["assistants"] == 51
    assert counts["dialogs"] == 260
    assert 2000 < counts["dialog_messages"] < 5000
    assert counts["knowledge_embeddings"] == 2400
    assert counts["balance_transactions"] == 300 and counts["ai_token_usage"] == 500
    assert 3000 < sum(counts.values()) < 10000
    for table, n in counts.items():
        assert int(seeded.sql(f"SELECT count(*) FROM {table}")) == n
    assert seeded.sql("SELECT count(*) FROM users WHERE email = 'test@example.com' "
                      "AND hashed_password LIKE 'pbkdf2_sha256$%'") == "1"
    assert seeded.sql("SELECT count(*) FROM dialogs d JOIN users u ON u.id = d.user_id "
                      "WHERE u.email = 'test@example.com'") == "60"
    # every vector is distinct and 384-dimensional
    assert seeded.sql("SELECT count(DISTINCT embedding), min(vector_dims(embedding)), max(vector_dims(embedding)) "
                      "FROM knowledge_embeddings") == "2400|384|384"
    assert "***" in seeded.seed_stdout and "chatai-Test-pw-1" not in seeded.seed_stdout


def test_seed_is_idempotent(seeded):
    before = seeded.sql("SELECT count(*) FROM dialog_messages")
    proc = run_app_cmd([str(PYTHON), "scripts/seed.py"], DATABASE_URL=seeded.url)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["seeded"] is False and "already" in proc.stdout
    assert summary["counts"] == seeded.seed_summary["counts"]
    assert seeded.sql("SELECT count(*) FROM dialog_messages") == before


def test_seed_rejects_bad_scale(seeded):
    proc = run_app_cmd([str(PYTHON), "scripts/seed.py", "--scale", "0"], DATABASE_URL=seeded.url, check=False)
    assert proc.returncode == 2 and "--scale" in proc.stderr


def test_cosine_index_in_plan(seeded):
    vector = seeded.sql("SELECT embedding::text FROM knowledge_embeddings ORDER BY id LIMIT 1 OFFSET 7")
    plan = seeded.sql(f"EXPLAIN SELECT id FROM knowledge_embeddings ORDER BY embedding <=> '{vector}' LIMIT 5")
    assert "Index Scan using knowledge_embeddings_embedding_cosine_idx" in plan, plan
    literal = "[" + ",".join(["0.5"] * 384) + "]"
    plan = seeded.sql(f"EXPLAIN SELECT id FROM knowledge_embeddings ORDER BY embedding <=> '{literal}' LIMIT 5")
    assert "knowledge_embeddings_embedding_cosine_idx" in plan, plan


def test_step_by_step_downgrade_and_back(pg):
    """Each named target of the plan leaves exactly the schema of that revision; then back to head."""
    db = pg.database()
    alembic(db.url, "upgrade", "head")
    run_app_cmd([str(PYTHON), "scripts/seed.py"], DATABASE_URL=db.url)
    users = db.sql("SELECT count(*) FROM users")

    alembic(db.url, "downgrade", "fb3228f45466")          # widget_version
    assert current(db) == "fb3228f45466"
    assert "widget_version" not in columns(db, "assistants") and "ai_model" in columns(db, "assistants")

    alembic(db.url, "downgrade", "d8e1f2a3b4c5")
    assert {"handoff_status", "handoff_requested_at"}.isdisjoint(columns(db, "dialogs"))
    assert "ai_model" not in columns(db, "assistants")
    assert "knowledge_embeddings_embedding_hot_cosine_idx" in indexes(db)

    alembic(db.url, "downgrade", "c4132f66258f")          # pgvector_indexes
    names = indexes(db)
    assert "knowledge_embeddings_embedding_hot_cosine_idx" not in names
    assert "ix_knowledge_embeddings_assistant_search" not in names
    assert "knowledge_embeddings_embedding_cosine_idx" in names
    assert db.sql("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == "1"

    alembic(db.url, "downgrade", "165e5d314eaf")          # performance_indexes
    names = indexes(db)
    assert "knowledge_embeddings_embedding_cosine_idx" not in names
    assert set(PLAN_INDEXES) <= names

    # the plan's "Manual Index Rollback" before an alembic downgrade must not break it
    for name in PLAN_INDEXES:
        db.sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    alembic(db.url, "downgrade", "7b2e4d6f8a10")
    assert not [n for n in indexes(db) if n.startswith(("ix_", "idx_"))]
    assert db.sql("SELECT count(*) FROM users") == users     # index-only steps keep every row

    alembic(db.url, "downgrade", "3f9a1c2b7d45")
    assert "uploaded_files" not in tables(db)
    alembic(db.url, "downgrade", "66ea5c9e3d91")          # baseline
    assert tables(db) == CORE
    assert db.sql("SELECT count(*) FROM users") == users

    alembic(db.url, "upgrade", "head")
    assert current(db) == "a1b2c3d4e5f6"
    assert set(PLAN_INDEXES) | {"knowledge_embeddings_embedding_cosine_idx"} <= indexes(db)
    assert db.sql("SELECT count(*) FROM assistants WHERE widget_version = 1") == \
        db.sql("SELECT count(*) FROM assistants")


def test_history_and_current_commands(seeded):
    hist = alembic(seeded.url, "history").stdout
    assert [line.split(" -> ")[1].split(",")[0].split(" ")[0] for line in hist.strip().splitlines()] == \
        list(reversed(CHAIN))
    assert alembic(seeded.url, "current").stdout.split()[0] == "a1b2c3d4e5f6"
