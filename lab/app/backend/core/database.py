"""SQLAlchemy engine and sessions (synchronous, psycopg 3 driver)."""
from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from core import app_config

engine = create_engine(
    app_config.SQLALCHEMY_DATABASE_URL,
    pool_pre_ping=True,
    pool_size=5,
    max_overflow=5,
    pool_timeout=10,
    connect_args={"connect_timeout": app_config.DB_CONNECT_TIMEOUT,
                  "application_name": f"replyx-backend {app_config.RELEASE}"},
)
SessionLocal = sessionmaker(bind=engine, autoflush=False, expire_on_commit=False)


def get_db() -> Iterator[Session]:
    """FastAPI dependency: one session per request, always closed."""
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def alembic_revision(db: Session) -> str | None:
    """The revision stamped in ``alembic_version`` (None when the table is missing or empty)."""
    exists = db.execute(text("SELECT to_regclass('public.alembic_version') IS NOT NULL")).scalar()
    if not exists:
        return None
    return db.execute(text("SELECT version_num FROM alembic_version LIMIT 1")).scalar()
