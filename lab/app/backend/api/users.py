"""GET /api/users/profile."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import current_user
from core.database import get_db
from models import Assistant, Dialog, User

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("/profile")
def profile(user: User = Depends(current_user), db: Session = Depends(get_db)) -> dict:
    assistants = db.scalar(select(func.count()).select_from(Assistant).where(Assistant.user_id == user.id))
    dialogs = db.scalar(select(func.count()).select_from(Dialog).where(Dialog.user_id == user.id))
    return {
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "role": user.role,
        "balance": float(user.balance),
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat() if user.created_at else None,
        "assistants_count": assistants,
        "dialogs_count": dialogs,
    }
