"""GET /api/dialogs (with message counts) and POST /api/dialogs/{id}/messages."""
from __future__ import annotations

import hashlib
import random
import time
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.orm import Session

try:  # optional: human-friendly "3 minutes ago"
    import humanize
except ImportError:  # pragma: no cover
    humanize = None

from api.deps import current_user
from core.database import get_db
from core.release import DIALOG_INSIGHTS, DIALOG_LIST_LIMIT, INSIGHTS_QUERY_PAUSE_S
from models import EMBEDDING_DIM, AITokenUsage, Assistant, Dialog, DialogMessage, User

router = APIRouter(prefix="/api/dialogs", tags=["dialogs"])


class MessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


def serialize_dialog(d: Dialog, message_count: int, last_message_at) -> dict:
    return {
        "id": d.id,
        "assistant_id": d.assistant_id,
        "guest_id": d.guest_id,
        "started_at": d.started_at.isoformat() if d.started_at else None,
        "ended_at": d.ended_at.isoformat() if d.ended_at else None,
        "handoff_status": d.handoff_status,
        "message_count": int(message_count or 0),
        "last_message_at": last_message_at.isoformat() if last_message_at else None,
    }


def _insights(db: Session, dialog_id: int) -> dict:
    """Per-dialog insights: message counters and the visitor's last activity."""
    row = db.execute(
        text("SELECT count(*) AS n, max(timestamp) AS last_at, "
             "count(*) FILTER (WHERE sender = 'user') AS visitor_messages, "
             "max(timestamp) FILTER (WHERE sender = 'user') AS visitor_last_at "
             "FROM dialog_messages WHERE dialog_id = :id"),
        {"id": dialog_id},
    ).one()
    # Keep the insight queries gentle on the replica (see INSIGHTS_QUERY_PAUSE_S).
    db.execute(text("SELECT pg_sleep(:pause)"), {"pause": INSIGHTS_QUERY_PAUSE_S})
    return {"n": row.n, "last_at": row.last_at, "visitor_messages": row.visitor_messages,
            "visitor_last_at": row.visitor_last_at}


def _ago(value) -> str | None:
    if value is None:
        return None
    if humanize is None:
        return value.isoformat()
    return humanize.naturaltime(datetime.now(timezone.utc) - value)


@router.get("")
def list_dialogs(limit: int = Query(DIALOG_LIST_LIMIT, ge=1, le=200), user: User = Depends(current_user),
                 db: Session = Depends(get_db)) -> dict:
    dialogs = db.execute(
        select(Dialog).where(Dialog.user_id == user.id)
        .order_by(Dialog.started_at.desc(), Dialog.id.desc()).limit(limit)
    ).scalars().all()
    items = []
    for d in dialogs:
        item = serialize_dialog(d, 0, None)
        if DIALOG_INSIGHTS:
            stats = _insights(db, d.id)
            item.update(serialize_dialog(d, stats["n"], stats["last_at"]))
            item["visitor_messages"] = stats["visitor_messages"]
            item["visitor_last_seen"] = _ago(stats["visitor_last_at"])
        items.append(item)
    return {"items": items, "count": len(items), "limit": limit}


def text_embedding(value: str) -> str:
    """Deterministic stand-in for the embedding model: 384 floats seeded by the text's digest."""
    rng = random.Random(hashlib.sha256(value.encode("utf-8")).digest())
    return "[" + ",".join(f"{rng.random():.5f}" for _ in range(EMBEDDING_DIM)) + "]"


def _estimate_tokens(value: str) -> int:
    return max(1, len(value) // 4)


@router.post("/{dialog_id}/messages", status_code=status.HTTP_201_CREATED)
def send_message(dialog_id: int, body: MessageIn, user: User = Depends(current_user),
                 db: Session = Depends(get_db)) -> dict:
    dialog = db.get(Dialog, dialog_id)
    if dialog is None or dialog.user_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dialog not found")
    started = time.monotonic()
    user_msg = DialogMessage(dialog_id=dialog.id, sender="user", text=body.text)
    db.add(user_msg)
    db.flush()

    # Retrieval: nearest knowledge chunks of the dialog's assistant (cosine distance, hnsw index).
    chunks = db.execute(
        text("SELECT id, chunk_text FROM knowledge_embeddings "
             "WHERE user_id = :uid AND (CAST(:aid AS integer) IS NULL OR assistant_id = :aid) "
             "ORDER BY embedding <=> CAST(:q AS vector) LIMIT 3"),
        {"uid": user.id, "aid": dialog.assistant_id, "q": text_embedding(body.text)},
    ).all()
    assistant = db.get(Assistant, dialog.assistant_id) if dialog.assistant_id else None
    model = assistant.ai_model if assistant else "gpt-4o-mini"
    if chunks:
        reply_text = "Here is what I found: " + chunks[0].chunk_text[:300]
    else:
        reply_text = "Thanks for your message, an operator will get back to you shortly."
    reply = DialogMessage(dialog_id=dialog.id, sender="assistant", text=reply_text)
    db.add(reply)
    prompt_tokens = _estimate_tokens(body.text) + sum(_estimate_tokens(c.chunk_text) for c in chunks)
    completion_tokens = _estimate_tokens(reply_text)
    db.add(AITokenUsage(user_id=user.id, assistant_id=dialog.assistant_id, model_name=model,
                        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens))
    if dialog.first_response_time is None:
        dialog.first_response_time = round(time.monotonic() - started, 4)
    db.commit()
    return {
        "dialog_id": dialog.id,
        "message": {"id": user_msg.id, "sender": "user", "text": user_msg.text},
        "reply": {"id": reply.id, "sender": "assistant", "text": reply.text},
        "knowledge_chunks": [c.id for c in chunks],
        "tokens": prompt_tokens + completion_tokens,
    }
