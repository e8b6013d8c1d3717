"""Alembic environment of the ReplyX backend.

The URL comes from ``core.app_config.DATABASE_URL`` (libpq form) converted to the psycopg driver.
This module must stay importable without FastAPI: rollback tooling runs alembic with the app's
interpreter on hosts where only the database stack matters.
"""
from __future__ import annotations

import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import engine_from_config, pool

APP_DIR = Path(__file__).resolve().parent.parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from core.app_config import DATABASE_URL, sqlalchemy_url  # noqa: E402

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# An explicit sqlalchemy.url (e.g. set by a tool through Config.set_main_option) wins.
URL = sqlalchemy_url(config.get_main_option("sqlalchemy.url") or DATABASE_URL)

# Migrations are written with explicit DDL; no autogenerate metadata on purpose (keeps models.py
# and its imports out of the migration path).
target_metadata = None


def run_migrations_offline() -> None:
    """``alembic upgrade/downgrade --sql``: emit the SQL without connecting."""
    context.configure(url=URL, target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    section = config.get_section(config.config_ini_section, {}) or {}
    section["sqlalchemy.url"] = URL
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
