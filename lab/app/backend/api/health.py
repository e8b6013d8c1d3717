"""GET /health and GET /api/version (no authentication)."""
from __future__ import annotations

import logging
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core.database import SessionLocal, alembic_revision
from core.release import RELEASE

router = APIRouter(tags=["health"])
log = logging.getLogger("replyx.health")


@router.get("/health")
def health():
    started = time.monotonic()
    try:
        with SessionLocal() as db:
            db.execute(text("SELECT 1")).scalar()
            revision = alembic_revision(db)
    except Exception as exc:  # noqa: BLE001 - any database failure makes the service unhealthy
        log.error("health check: database unreachable: %s", type(exc).__name__)
        return JSONResponse(status_code=503, content={"status": "error", "database": "error",
                                                      "error": type(exc).__name__, "release": RELEASE})
    return {"status": "ok", "database": "ok", "alembic_revision": revision, "release": RELEASE,
            "db_latency_ms": round((time.monotonic() - started) * 1000, 2)}


@router.get("/api/version")
def version():
    try:
        with SessionLocal() as db:
            revision = alembic_revision(db)
    except Exception:  # noqa: BLE001
        revision = None
    return {"release": RELEASE, "alembic_revision": revision}
