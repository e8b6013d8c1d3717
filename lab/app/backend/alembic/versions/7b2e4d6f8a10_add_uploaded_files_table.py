"""add uploaded_files table

Revision ID: 7b2e4d6f8a10
Revises: 3f9a1c2b7d45
Create Date: 2025-07-01 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "7b2e4d6f8a10"
down_revision = "3f9a1c2b7d45"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = ["uploaded_files"]
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    op.create_table(
        "uploaded_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("stored_path", sa.String(500), nullable=False),
        sa.Column("content_type", sa.String(100)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_table("uploaded_files")
