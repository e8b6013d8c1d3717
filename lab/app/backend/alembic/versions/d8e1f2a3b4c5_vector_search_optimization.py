"""vector search optimisation: hot-set hnsw index and per-assistant prefilter index

Revision ID: d8e1f2a3b4c5
Revises: c4132f66258f
Create Date: 2025-08-11 09:00:00
"""
from alembic import op

revision = "d8e1f2a3b4c5"
down_revision = "c4132f66258f"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = []
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    # Retrieval of high-importance chunks (FAQ answers, pinned instructions) uses a smaller, denser graph.
    op.execute("CREATE INDEX knowledge_embeddings_embedding_hot_cosine_idx ON knowledge_embeddings "
               "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
               "WHERE importance >= 8")
    # Filtered search per assistant (pre-filter path when an assistant has few chunks).
    op.execute("CREATE INDEX ix_knowledge_embeddings_assistant_search ON knowledge_embeddings "
               "(assistant_id, importance DESC) INCLUDE (doc_id, chunk_index)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_knowledge_embeddings_assistant_search")
    op.execute("DROP INDEX IF EXISTS knowledge_embeddings_embedding_hot_cosine_idx")
