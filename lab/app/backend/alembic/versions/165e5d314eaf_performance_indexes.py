"""performance indexes: 36 btree indexes across the core, billing and file tables

Revision ID: 165e5d314eaf
Revises: 7b2e4d6f8a10
Create Date: 2025-07-14 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "165e5d314eaf"
down_revision = "7b2e4d6f8a10"
branch_labels = None
depends_on = None

# "table" or "table.column" whose data downgrade() destroys ([] when it only drops indexes).
downgrade_drops_data = []
# upgrade() only adds (tables, indexes, nullable or defaulted columns): the previous release runs on this schema.
additive = True

T = sa.text
# (name, table, columns/expressions, extra create_index options). Every name starts with ix_ or idx_.
INDEXES = [
    # users
    ("ix_users_email_lower", "users", [T("lower(email)")], {}),
    ("ix_users_created_at", "users", ["created_at"], {}),
    ("ix_users_role", "users", ["role"], {}),
    ("ix_users_active", "users", ["id"], {"postgresql_where": T("is_active")}),
    # assistants
    ("ix_assistants_user_id", "assistants", ["user_id"], {}),
    ("ix_assistants_user_active", "assistants", ["user_id", "is_active"], {}),
    ("ix_assistants_created_at", "assistants", ["created_at"], {}),
    ("ix_assistants_name", "assistants", ["name"], {}),
    # dialogs
    ("ix_dialogs_user_id", "dialogs", ["user_id"], {}),
    ("ix_dialogs_assistant_id", "dialogs", ["assistant_id"], {}),
    ("ix_dialogs_started_at", "dialogs", ["started_at"], {}),
    ("ix_dialogs_user_started", "dialogs", ["user_id", T("started_at DESC")], {}),
    ("ix_dialogs_guest_id", "dialogs", ["guest_id"], {}),
    ("ix_dialogs_open", "dialogs", ["assistant_id"], {"postgresql_where": T("ended_at IS NULL")}),
    # dialog_messages
    ("ix_dialog_messages_dialog_id", "dialog_messages", ["dialog_id"], {}),
    ("ix_dialog_messages_dialog_timestamp", "dialog_messages", ["dialog_id", "timestamp"], {}),
    ("ix_dialog_messages_timestamp", "dialog_messages", ["timestamp"], {}),
    ("ix_dialog_messages_sender", "dialog_messages", ["sender"], {}),
    # knowledge_embeddings
    ("ix_knowledge_embeddings_user_assistant", "knowledge_embeddings", ["user_id", "assistant_id"], {}),
    ("ix_knowledge_embeddings_doc_id", "knowledge_embeddings", ["doc_id"], {}),
    ("ix_knowledge_embeddings_doc_chunk", "knowledge_embeddings", ["doc_id", "chunk_index"], {}),
    ("ix_knowledge_embeddings_doc_type", "knowledge_embeddings", ["doc_type"], {}),
    ("ix_knowledge_embeddings_created_at", "knowledge_embeddings", ["created_at"], {}),
    ("ix_knowledge_embeddings_importance", "knowledge_embeddings", ["importance"], {}),
    # balance_transactions
    ("ix_balance_transactions_user_created", "balance_transactions", ["user_id", "created_at"], {}),
    ("ix_balance_transactions_type", "balance_transactions", ["transaction_type"], {}),
    ("ix_balance_transactions_related_id", "balance_transactions", ["related_id"], {}),
    ("ix_balance_transactions_created_at", "balance_transactions", ["created_at"], {}),
    # ai_token_usage
    ("idx_ai_token_usage_user_created", "ai_token_usage", ["user_id", "created_at"], {}),
    ("idx_ai_token_usage_assistant_id", "ai_token_usage", ["assistant_id"], {}),
    ("idx_ai_token_usage_model_name", "ai_token_usage", ["model_name"], {}),
    ("idx_ai_token_usage_created_at", "ai_token_usage", ["created_at"], {}),
    # uploaded_files
    ("ix_uploaded_files_user_id", "uploaded_files", ["user_id"], {}),
    ("ix_uploaded_files_sha256", "uploaded_files", ["sha256"], {}),
    ("ix_uploaded_files_created_at", "uploaded_files", ["created_at"], {}),
    ("ix_uploaded_files_user_created", "uploaded_files", ["user_id", T("created_at DESC")], {}),
]


def upgrade() -> None:
    for name, table, columns, options in INDEXES:
        op.create_index(name, table, columns, **options)


def downgrade() -> None:
    # IF EXISTS: the plan's "Manual Index Rollback" may already have dropped some of them by hand.
    for name, table, _columns, _options in reversed(INDEXES):
        op.drop_index(name, table_name=table, if_exists=True)
