"""POST /api/login: email + password -> bearer token."""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.database import get_db
from core.security import create_token, verify_password
from models import User

router = APIRouter(prefix="/api", tags=["auth"])
log = logging.getLogger("replyx.auth")


async def _credentials(request: Request) -> tuple[str, str]:
    """JSON body, whatever the Content-Type (``curl -d '{...}'`` sends it as a form), or a real form."""
    raw = await request.body()
    data: dict = {}
    try:
        parsed = json.loads(raw or b"{}")
        if isinstance(parsed, dict):
            data = parsed
    except ValueError:
        form = parse_qs(raw.decode("utf-8", "replace"))
        data = {k: v[0] for k, v in form.items()}
    email, password = data.get("email") or data.get("username"), data.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise HTTPException(422, "email and password are required")
    return email.strip(), password


def _authenticate(db: Session, email: str, password: str) -> dict:
    user = db.execute(select(User).where(func.lower(User.email) == email.lower())).scalar_one_or_none()
    if user is None or not user.is_active or not verify_password(password, user.hashed_password):
        log.warning("login failed email=%s", email)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid email or password",
                            headers={"WWW-Authenticate": "Bearer"})
    log.info("login ok user_id=%s", user.id)
    return {"access_token": create_token(user.id), "token_type": "bearer"}


@router.post("/login")
async def login(request: Request, db: Session = Depends(get_db)) -> dict:
    email, password = await _credentials(request)
    # PBKDF2 and the query are blocking: keep them off the event loop (health checks stay responsive).
    return await run_in_threadpool(_authenticate, db, email, password)
