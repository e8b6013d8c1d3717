"""add billing tables: balance_transactions and ai_token_usage

Revision ID: 3f9a1c2b7d45
Revises: 66ea5c9e3d91
Create Date: 2025-06-16 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "3f9a1c2b7d45"
down_revision = "66ea5c9e3d91"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = ["balance_transactions", "ai_token_usage"]
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    op.create_table(
        "balance_transactions",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("transaction_type", sa.String(30), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("balance_before", sa.Numeric(12, 2), nullable=False),
        sa.Column("balance_after", sa.Numeric(12, 2), nullable=False),
        sa.Column("related_id", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.create_table(
        "ai_token_usage",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assistant_id", sa.Integer, sa.ForeignKey("assistants.id", ondelete="SET NULL")),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_table("ai_token_usage")
    op.drop_table("balance_transactions")
