"""pgvector indexes: hnsw cosine index on knowledge_embeddings.embedding

Revision ID: c4132f66258f
Revises: 165e5d314eaf
Create Date: 2025-07-28 09:00:00
"""
from alembic import op

revision = "c4132f66258f"
down_revision = "165e5d314eaf"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = []
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    op.execute("CREATE INDEX knowledge_embeddings_embedding_cosine_idx ON knowledge_embeddings "
               "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")


def downgrade() -> None:
    # The vector extension stays: only the index goes (vector search falls back to a sequential scan).
    op.execute("DROP INDEX IF EXISTS knowledge_embeddings_embedding_cosine_idx")
