"""widget version: assistants.widget_version

Revision ID: a1b2c3d4e5f6
Revises: fb3228f45466
Create Date: 2025-09-08 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "a1b2c3d4e5f6"
down_revision = "fb3228f45466"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = ["assistants.widget_version"]
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    op.add_column("assistants", sa.Column("widget_version", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    op.drop_column("assistants", "widget_version")
