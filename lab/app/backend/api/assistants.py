"""GET /api/assistants and POST /api/assistants."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import current_user
from core.database import get_db
from models import Assistant, User

router = APIRouter(prefix="/api/assistants", tags=["assistants"])


class AssistantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    system_prompt: str | None = None
    ai_model: str = Field(default="gpt-4o-mini", max_length=64)
    widget_version: int = Field(default=1, ge=1)
    is_active: bool = True


def serialize(a: Assistant) -> dict:
    return {
        "id": a.id,
        "name": a.name,
        "system_prompt": a.system_prompt,
        "ai_model": a.ai_model,
        "widget_version": a.widget_version,
        "is_active": a.is_active,
        "created_at": a.created_at.isoformat() if a.created_at else None,
    }


@router.get("")
def list_assistants(user: User = Depends(current_user), db: Session = Depends(get_db)) -> list[dict]:
    rows = db.execute(select(Assistant).where(Assistant.user_id == user.id).order_by(Assistant.id)).scalars()
    return [serialize(a) for a in rows]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_assistant(body: AssistantCreate, user: User = Depends(current_user),
                     db: Session = Depends(get_db)) -> dict:
    name = body.name.strip()
    if not name:
        raise HTTPException(422, "name must not be blank")
    assistant = Assistant(user_id=user.id, name=name, system_prompt=body.system_prompt, ai_model=body.ai_model,
                          widget_version=body.widget_version, is_active=body.is_active)
    db.add(assistant)
    db.commit()
    db.refresh(assistant)
    return serialize(assistant)
