"""POST /api/files (multipart upload) and GET /api/files/{id} (download)."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from api.deps import current_user
from core import app_config
from core.database import get_db
from models import UploadedFile, User

router = APIRouter(prefix="/api/files", tags=["files"])
CHUNK = 1024 * 1024


def _safe_name(name: str | None) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip() or "upload.bin"
    return base[:255]


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload(file: UploadFile = File(...), user: User = Depends(current_user),
                 db: Session = Depends(get_db)) -> dict:
    user_dir = app_config.UPLOAD_DIR / str(user.id)
    user_dir.mkdir(parents=True, exist_ok=True)
    stored = user_dir / uuid.uuid4().hex
    partial = stored.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if app_config.MAX_UPLOAD_BYTES and size > app_config.MAX_UPLOAD_BYTES:
                    raise HTTPException(413, "file too large")
                digest.update(chunk)
                out.write(chunk)
        os.replace(partial, stored)
    finally:
        partial.unlink(missing_ok=True)
    row = UploadedFile(user_id=user.id, filename=_safe_name(file.filename),
                       stored_path=str(stored.relative_to(app_config.UPLOAD_DIR)),
                       content_type=file.content_type, size=size, sha256=digest.hexdigest())
    db.add(row)
    db.commit()
    db.refresh(row)
    return {"id": row.id, "filename": row.filename, "size": row.size, "sha256": row.sha256,
            "content_type": row.content_type}


@router.get("/{file_id}")
def download(file_id: int, user: User = Depends(current_user), db: Session = Depends(get_db)):
    row = db.get(UploadedFile, file_id)
    if row is None or row.user_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    path = (app_config.UPLOAD_DIR / row.stored_path).resolve()
    if app_config.UPLOAD_DIR.resolve() not in path.parents or not path.is_file():
        raise HTTPException(status.HTTP_410_GONE, "file content is missing")
    return FileResponse(Path(path), media_type=row.content_type or "application/octet-stream",
                        filename=row.filename, headers={"X-Content-SHA256": row.sha256})
