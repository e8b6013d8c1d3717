"""baseline schema: pgvector extension and core tables

Revision ID: 66ea5c9e3d91
Revises:
Create Date: 2025-06-02 09:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.types import UserDefinedType

revision = "66ea5c9e3d91"
down_revision = None
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = ["users", "assistants", "dialogs", "dialog_messages", "knowledge_embeddings"]


class _Vector(UserDefinedType):
    cache_ok = True

    def __init__(self, dim):
        self.dim = dim

    def get_col_spec(self, **kw):
        return f"vector({self.dim})"


def _now():
    return sa.text("now()")


def upgrade() -> None:
    # The extension is database-level (usually created by the DBA as superuser beforehand: pgvector
    # is not a trusted extension); IF NOT EXISTS keeps this a no-op then. downgrade() leaves it.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("hashed_password", sa.String(255), nullable=False),
        sa.Column("first_name", sa.String(100)),
        sa.Column("role", sa.String(20), nullable=False, server_default="user"),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("balance", sa.Numeric(12, 2), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.UniqueConstraint("email", name="users_email_key"),
    )
    op.create_table(
        "assistants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("system_prompt", sa.Text),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "dialogs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assistant_id", sa.Integer, sa.ForeignKey("assistants.id", ondelete="SET NULL")),
        sa.Column("guest_id", sa.String(64)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("auto_response", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_response_time", sa.Float),
    )
    op.create_table(
        "dialog_messages",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("dialog_id", sa.Integer, sa.ForeignKey("dialogs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sender", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_table(
        "knowledge_embeddings",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assistant_id", sa.Integer, sa.ForeignKey("assistants.id", ondelete="CASCADE")),
        sa.Column("doc_id", sa.Integer, nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("chunk_text", sa.Text, nullable=False),
        sa.Column("embedding", _Vector(384), nullable=False),
        sa.Column("doc_type", sa.String(20), nullable=False, server_default="document"),
        sa.Column("importance", sa.Integer, nullable=False, server_default="5"),
        sa.Column("token_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )


def downgrade() -> None:
    op.drop_table("knowledge_embeddings")
    op.drop_table("dialog_messages")
    op.drop_table("dialogs")
    op.drop_table("assistants")
    op.drop_table("users")
