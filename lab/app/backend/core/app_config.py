"""Application configuration: ``.env`` in the application directory, overridden by the environment.

The plan's configuration check is::

    python3 -c "from core.app_config import DATABASE_URL; print(DATABASE_URL)"

``DATABASE_URL`` is kept in plain libpq form (``postgresql://user:pw@host:port/db``) so the same value
works for ``psql $DATABASE_URL``; SQLAlchemy gets the psycopg form from :func:`sqlalchemy_url`.
Never log ``DATABASE_URL`` itself: use :func:`redacted_url`.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.release import RELEASE

APP_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = Path(os.environ.get("REPLYX_ENV_FILE", str(APP_DIR / ".env")))


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``#`` comments, blank lines, optional ``export ``, quoted values)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


_FILE_VALUES = parse_env_file(ENV_FILE)


def get(key: str, default: str | None = None) -> str | None:
    """A setting: the environment wins over ``.env``, which wins over ``default``."""
    if key in os.environ:
        return os.environ[key]
    return _FILE_VALUES.get(key, default)


def _app_path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else APP_DIR / path


def libpq_url(url: str) -> str:
    """``postgresql://`` form of a database URL (drops a SQLAlchemy ``+driver`` suffix)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    scheme = scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return f"{scheme}://{rest}"


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy form of a database URL, on the psycopg (3) driver."""
    plain = libpq_url(url)
    if plain.startswith("postgresql://"):
        return "postgresql+psycopg://" + plain[len("postgresql://"):]
    return plain


def redacted_url(url: str | None) -> str:
    """The URL with its password replaced by ``***`` (safe for logs)."""
    if not url:
        return "<unset>"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit((parts.scheme, f"{userinfo}@{netloc[1]}", parts.path, parts.query, parts.fragment))


_db_url = get("DATABASE_URL")
if not _db_url:
    raise RuntimeError(f"DATABASE_URL is not set (environment or {ENV_FILE})")
DATABASE_URL: str = libpq_url(_db_url)
SQLALCHEMY_DATABASE_URL: str = sqlalchemy_url(DATABASE_URL)

_secret = get("SECRET_KEY")
SECRET_KEY_IS_EPHEMERAL = not _secret
# Without SECRET_KEY tokens are signed with a per-process key: they stop working on restart.
SECRET_KEY: str = _secret or secrets.token_urlsafe(32)

LOG_FILE: Path = _app_path(get("LOG_FILE", "logs/backend.log") or "logs/backend.log")
LOG_LEVEL: str = (get("LOG_LEVEL", "INFO") or "INFO").upper()
UPLOAD_DIR: Path = _app_path(get("UPLOAD_DIR", "uploads") or "uploads")
MAX_UPLOAD_BYTES: int = int(get("MAX_UPLOAD_BYTES", str(20 * 1024 * 1024)) or 0)
TOKEN_TTL_SECONDS: int = int(get("TOKEN_TTL_SECONDS", "86400") or 86400)
DB_CONNECT_TIMEOUT: int = int(get("DB_CONNECT_TIMEOUT", "3") or 3)
HOST: str = get("HOST", "127.0.0.1") or "127.0.0.1"
PORT: int = int(get("PORT", "8000") or 8000)
ENVIRONMENT: str = get("ENVIRONMENT", "lab") or "lab"

__all__ = ["APP_DIR", "DATABASE_URL", "SQLALCHEMY_DATABASE_URL", "SECRET_KEY", "LOG_FILE", "LOG_LEVEL",
           "UPLOAD_DIR", "MAX_UPLOAD_BYTES", "TOKEN_TTL_SECONDS", "DB_CONNECT_TIMEOUT", "HOST", "PORT",
           "ENVIRONMENT", "RELEASE", "get", "libpq_url", "sqlalchemy_url", "redacted_url"]
