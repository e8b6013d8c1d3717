"""Password hashing (PBKDF2-SHA256, hashlib) and HMAC-signed bearer tokens (stdlib only)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from core import app_config

PBKDF2_ALGORITHM = "pbkdf2_sha256"
PBKDF2_ITERATIONS = 100_000


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def hash_password(password: str, *, salt: str | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hex digest>``."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return f"{PBKDF2_ALGORITHM}${iterations}${salt}${digest.hex()}"


def verify_password(password: str, encoded: str | None) -> bool:
    try:
        algorithm, iterations, salt, digest = (encoded or "").split("$", 3)
        if algorithm != PBKDF2_ALGORITHM:
            return False
        candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def create_token(user_id: int, *, ttl: int | None = None) -> str:
    """``<payload b64>.<hmac-sha256 b64>`` with ``sub``, ``iat`` and ``exp``."""
    now = int(time.time())
    payload = {"sub": user_id, "iat": now, "exp": now + (ttl or app_config.TOKEN_TTL_SECONDS)}
    body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    sig = hmac.new(app_config.SECRET_KEY.encode(), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64e(sig)}"


def decode_token(token: str) -> int | None:
    """The user id of a valid, unexpired token; None otherwise."""
    try:
        body, sig = token.split(".", 1)
        expected = hmac.new(app_config.SECRET_KEY.encode(), body.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64d(sig)):
            return None
        payload = json.loads(_b64d(body))
        if int(payload.get("exp", 0)) < time.time():
            return None
        return int(payload["sub"])
    except (ValueError, KeyError, TypeError, UnicodeError):
        return None
