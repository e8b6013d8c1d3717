"""Fixtures for the application-side module tests: service_health, app_service, rollback_lock.

Every module runs for real through ``ansible localhost -m replyx.rollback.<name>`` with the json
callback (the way a playbook runs it), against servers these fixtures start on 127.0.0.1 and stop.

- ``run_module(name, args, check_mode=False)`` -> the module's result dict (``failed`` when it failed).
- ``http_app``: a small threaded HTTP server with fast/slow/login/profile endpoints.
- ``pg``: a real PostgreSQL (embedded PG 18) with a ``chatai`` database holding a few tables.
- ``free_port()``: a free port in 56400-56499.
- ``pm2_home``: a private PM2_HOME; ``pm2 kill`` on teardown.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from pgserver import PgServer, embedded_bin_dir  # noqa: E402

ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
PM2 = ROOT / ".tools" / "node_modules" / ".bin" / "pm2"
TOKEN = "tok-appside-7f3a9c"
LOGIN_PASSWORD = "appside-login-pw"


def run_module(name: str, args: dict, check_mode: bool = False, diff: bool = False, timeout: int = 180) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE), "localhost", "-m", f"replyx.rollback.{name}", "-a", json.dumps(args)]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from ansible (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    result["_raw"] = proc.stdout
    return result


def free_port() -> int:
    for port in range(56400, 56500):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not port_open(port):
            return port
    raise RuntimeError("no free port in 56400-56499")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(predicate, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# --- HTTP app -----------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.hits.append((self.path, self.headers.get("Authorization")))
        if self.path == "/health":
            return self._send(200, {"status": "ok", "db": {"up": True}})
        if self.path.startswith("/slow"):
            time.sleep(0.4)
            return self._send(200, {"status": "ok"})
        if self.path.startswith("/medium"):
            time.sleep(0.12)
            return self._send(200, {"status": "ok"})
        if self.path == "/api/users/profile":
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return self._send(200, {"email": "ops@example.com"})
            return self._send(401, {"detail": "Not authenticated"})
        if self.path == "/broken":
            return self._send(500, {"detail": "boom"})
        return self._send(404, {"detail": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/api/login":
            if body.get("email") == "ops@example.com" and body.get("password") == LOGIN_PASSWORD:
                return self._send(200, {"access_token": TOKEN, "token_type": "bearer"})
            return self._send(401, {"detail": "Incorrect email or password"})
        return self._send(404, {"detail": "not found"})


@pytest.fixture(scope="module")
def http_app():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


# --- PostgreSQL ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    server = PgServer(embedded_bin_dir(), archive=False).start()
    try:
        server.wait_ready()
        server.psql("CREATE DATABASE chatai")
        server.psql("CREATE TABLE users (id serial PRIMARY KEY, email text);"
                    "INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 25) g;"
                    "CREATE TABLE assistants (id serial PRIMARY KEY, name text);"
                    "INSERT INTO assistants (name) SELECT 'a' || g FROM generate_series(1, 7) g;"
                    "CREATE TABLE dialogs (id serial PRIMARY KEY);", dbname="chatai")
        yield server
    finally:
        server.stop()


# --- PM2 ----------------------------------------------------------------------------------------------

@pytest.fixture
def pm2_home(tmp_path):
    home = tmp_path / "pm2home"
    home.mkdir()
    yield home
    env = dict(os.environ, PM2_HOME=str(home))
    subprocess.run([str(PM2), "delete", "all"], env=env, capture_output=True, timeout=60)
    subprocess.run([str(PM2), "kill"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def spawn():
    """Start helper processes (sleepers, ...) and kill what is left of them afterwards."""
    procs = []

    def start(argv, **kwargs):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
