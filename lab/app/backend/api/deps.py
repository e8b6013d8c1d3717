"""Shared request dependencies: the database session and the authenticated user."""
from __future__ import annotations

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from core.database import get_db
from core.security import decode_token
from models import User

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def current_user(request: Request, db: Session = Depends(get_db)) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers=_UNAUTHORIZED)
    user_id = decode_token(token.strip())
    user = db.get(User, user_id) if user_id is not None else None
    if user is None or not user.is_active:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid or expired token", headers=_UNAUTHORIZED)
    request.state.user_id = user.id
    return user
