"""assistants.ai_model and dialogs handoff fields (operator handoff)

Revision ID: fb3228f45466
Revises: d8e1f2a3b4c5
Create Date: 2025-08-25 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "fb3228f45466"
down_revision = "d8e1f2a3b4c5"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = ["assistants.ai_model", "dialogs.handoff_status", "dialogs.handoff_requested_at"]
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True


def upgrade() -> None:
    op.add_column("assistants", sa.Column("ai_model", sa.String(64), nullable=False, server_default="gpt-4o-mini"))
    op.add_column("dialogs", sa.Column("handoff_status", sa.String(20), nullable=False, server_default="none"))
    op.add_column("dialogs", sa.Column("handoff_requested_at", sa.DateTime(timezone=True)))
    op.create_check_constraint("ck_dialogs_handoff_status", "dialogs",
                               "handoff_status IN ('none', 'requested', 'active', 'released')")
    op.create_index("ix_dialogs_handoff_requested", "dialogs", ["handoff_requested_at"],
                    postgresql_where=sa.text("handoff_status = 'requested'"))


def downgrade() -> None:
    op.drop_index("ix_dialogs_handoff_requested", table_name="dialogs", if_exists=True)
    op.drop_constraint("ck_dialogs_handoff_status", "dialogs", type_="check")
    op.drop_column("dialogs", "handoff_requested_at")
    op.drop_column("dialogs", "handoff_status")
    op.drop_column("assistants", "ai_model")
