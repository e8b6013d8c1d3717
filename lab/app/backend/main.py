"""ReplyX backend (lab build): FastAPI app.

Run from this directory::

    uvicorn main:app --host 127.0.0.1 --port 8000
    python3 main.py            # HOST / PORT from the environment or .env, default 127.0.0.1:8000
"""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import assistants, auth, dialogs, files, health, users
from core import app_config
from core.database import engine
from core.logging_config import setup_logging
from core.release import RELEASE

log = setup_logging()
access_log = logging.getLogger("replyx.access")
app_log = logging.getLogger("replyx.app")


@asynccontextmanager
async def lifespan(_app: FastAPI):
    app_log.info("starting replyx-backend release=%s env=%s database=%s log_file=%s upload_dir=%s",
                 RELEASE, app_config.ENVIRONMENT, app_config.redacted_url(app_config.DATABASE_URL),
                 app_config.LOG_FILE, app_config.UPLOAD_DIR)
    if app_config.SECRET_KEY_IS_EPHEMERAL:
        app_log.warning("SECRET_KEY is not set: using a per-process key, tokens end with this process")
    yield
    engine.dispose()
    app_log.info("stopped replyx-backend release=%s", RELEASE)


app = FastAPI(title="ReplyX backend", version=RELEASE.lstrip("v"), lifespan=lifespan)


@app.middleware("http")
async def log_requests(request: Request, call_next):
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:12]
    try:
        response = await call_next(request)
    except Exception:  # noqa: BLE001 - last line of defence: log it, answer 500
        elapsed = (time.perf_counter() - started) * 1000
        app_log.exception("unhandled exception %s %s request_id=%s", request.method, request.url.path, request_id)
        access_log.error("%s %s 500 %.1fms request_id=%s", request.method, request.url.path, elapsed, request_id)
        return JSONResponse(status_code=500, content={"detail": "Internal Server Error", "request_id": request_id},
                            headers={"X-Request-ID": request_id})
    elapsed = (time.perf_counter() - started) * 1000
    level = logging.ERROR if response.status_code >= 500 else logging.INFO
    access_log.log(level, "%s %s %s %.1fms request_id=%s user=%s client=%s", request.method, request.url.path,
                   response.status_code, elapsed, request_id, getattr(request.state, "user_id", "-"),
                   request.client.host if request.client else "-")
    response.headers["X-Request-ID"] = request_id
    response.headers["X-Release"] = RELEASE
    return response


app.include_router(health.router)
app.include_router(auth.router)
app.include_router(users.router)
app.include_router(assistants.router)
app.include_router(dialogs.router)
app.include_router(files.router)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=app_config.HOST, port=app_config.PORT, log_level="info")
