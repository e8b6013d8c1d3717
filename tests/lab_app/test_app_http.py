"""The backend's endpoints for real: the app under ``python main.py`` against a seeded PostgreSQL 18."""
from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.lab_app.conftest import APP_PASSWORD, APP_SRC, PYTHON, AppServer, alembic, http, multipart, \
    port_in_range, run_app_cmd

pytestmark = pytest.mark.pg

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    db = pg.database()
    alembic(db.url, "upgrade", "head")
    run_app_cmd([str(PYTHON), "scripts/seed.py"], DATABASE_URL=db.url)
    srv = AppServer(APP_SRC, db.url, tmp_path_factory.mktemp("backend"), mode="main").start()
    srv.db = db
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def auth(server):
    return server.login()


def test_health(server):
    resp = http("GET", server.base + "/health")
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["alembic_revision"] == "a1b2c3d4e5f6" and body["release"] == "v1.1.0"
    assert resp.headers["x-release"] == "v1.1.0"


def test_version(server):
    assert http("GET", server.base + "/api/version").json() == {"release": "v1.1.0",
                                                                "alembic_revision": "a1b2c3d4e5f6"}


def test_login_as_the_plan_sends_it(server):
    # curl -X POST .../api/login -d '{"email":...}' sends the JSON as a form content type
    resp = http("POST", server.base + "/api/login", data=b'{"email":"test@example.com","password":"testpass"}',
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    body = resp.json()
    assert body["token_type"] == "bearer" and body["access_token"].count(".") == 1


@pytest.mark.parametrize("payload", [{"email": "test@example.com", "password": "wrong"},
                                     {"email": "nobody@example.com", "password": "testpass"}])
def test_login_bad_credentials(server, payload):
    assert http("POST", server.base + "/api/login", json_body=payload).status == 401


def test_login_missing_fields(server):
    assert http("POST", server.base + "/api/login", json_body={"email": "test@example.com"}).status == 422


@pytest.mark.parametrize("method,path", [("GET", "/api/users/profile"), ("GET", "/api/assistants"),
                                         ("POST", "/api/assistants"), ("GET", "/api/dialogs"),
                                         ("POST", "/api/dialogs/1/messages"), ("POST", "/api/files"),
                                         ("GET", "/api/files/1")])
def test_auth_required(server, method, path):
    assert http(method, server.base + path, data=b"" if method == "POST" else None).status == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert http(method, server.base + path, headers=bad, data=b"" if method == "POST" else None).status == 401


def test_token_signed_with_secret_key(server, auth):
    token = auth["Authorization"].split()[1]
    body, sig = token.split(".")
    forged = {"Authorization": f"Bearer {body}.{sig[:-2]}AA"}
    assert http("GET", server.base + "/api/users/profile", headers=forged).status == 401


def test_profile(server, auth):
    resp = http("GET", server.base + "/api/users/profile", headers=auth)
    assert resp.status == 200
    body = resp.json()
    assert body["email"] == "test@example.com" and body["assistants_count"] >= 3 and body["dialogs_count"] == 60


def test_assistants_list_and_create(server, auth):
    resp = http("GET", server.base + "/api/assistants", headers=auth)
    assert resp.status == 200
    items = resp.json()
    assert len(items) >= 3 and all(a["widget_version"] == 1 for a in items[:3])
    created = http("POST", server.base + "/api/assistants", headers=auth,
                   json_body={"name": "Drill bot", "widget_version": 2, "ai_model": "gpt-4o"})
    assert created.status == 201
    assert created.json()["widget_version"] == 2 and created.json()["ai_model"] == "gpt-4o"
    names = [a["name"] for a in http("GET", server.base + "/api/assistants", headers=auth).json()]
    assert "Drill bot" in names
    assert http("POST", server.base + "/api/assistants", headers=auth, json_body={"name": ""}).status == 422


def test_dialogs_with_message_counts(server, auth):
    started = time.monotonic()
    resp = http("GET", server.base + "/api/dialogs", headers=auth)
    elapsed = time.monotonic() - started
    assert resp.status == 200
    body = resp.json()
    assert body["count"] == 50 and len(body["items"]) == 50
    real = {int(r.split("|")[0]): int(r.split("|")[1]) for r in server.db.sql(
        "SELECT d.id, count(m.id) FROM dialogs d JOIN users u ON u.id = d.user_id "
        "LEFT JOIN dialog_messages m ON m.dialog_id = d.id WHERE u.email = 'test@example.com' GROUP BY d.id"
    ).splitlines()}
    for item in body["items"]:
        assert item["message_count"] == real[item["id"]]
    starts = [item["started_at"] for item in body["items"]]
    assert starts == sorted(starts, reverse=True)
    assert elapsed < 2.0, elapsed
    assert http("GET", server.base + "/api/dialogs?limit=5", headers=auth).json()["count"] == 5


def test_send_message(server, auth):
    dialog_id = http("GET", server.base + "/api/dialogs?limit=1", headers=auth).json()["items"][0]["id"]
    before = int(server.db.sql(f"SELECT count(*) FROM dialog_messages WHERE dialog_id = {dialog_id}"))
    usage = int(server.db.sql("SELECT count(*) FROM ai_token_usage"))
    resp = http("POST", server.base + f"/api/dialogs/{dialog_id}/messages", headers=auth,
                json_body={"text": "How long does delivery take?"})
    assert resp.status == 201, resp.body
    body = resp.json()
    assert body["reply"]["sender"] == "assistant" and body["knowledge_chunks"]
    assert int(server.db.sql(f"SELECT count(*) FROM dialog_messages WHERE dialog_id = {dialog_id}")) == before + 2
    assert int(server.db.sql("SELECT count(*) FROM ai_token_usage")) == usage + 1
    other = server.db.sql("SELECT d.id FROM dialogs d JOIN users u ON u.id = d.user_id "
                          "WHERE u.email <> 'test@example.com' LIMIT 1")
    assert http("POST", server.base + f"/api/dialogs/{other}/messages", headers=auth,
                json_body={"text": "hi"}).status == 404


def test_file_upload_download_roundtrip(server, auth):
    content = os.urandom(300_000) + b"ReplyX"
    body, headers = multipart("file", "price list.pdf", content, "application/pdf")
    resp = http("POST", server.base + "/api/files", headers={**auth, **headers}, data=body)
    assert resp.status == 201, resp.body
    meta = resp.json()
    digest = hashlib.sha256(content).hexdigest()
    assert meta["sha256"] == digest and meta["size"] == len(content) and meta["filename"] == "price list.pdf"
    assert server.db.sql(f"SELECT sha256 FROM uploaded_files WHERE id = {meta['id']}") == digest
    stored = list(server.upload_dir.rglob("*"))
    assert any(p.is_file() and p.read_bytes() == content for p in stored)
    down = http("GET", server.base + f"/api/files/{meta['id']}", headers=auth)
    assert down.status == 200 and hashlib.sha256(down.body).hexdigest() == digest
    assert down.headers["x-content-sha256"] == digest
    assert http("GET", server.base + "/api/files/999999", headers=auth).status == 404
    other = server.login("demo@example.com", "demopass")
    assert http("GET", server.base + f"/api/files/{meta['id']}", headers=other).status == 404


def test_log_file_lines(server, auth):
    http("GET", server.base + "/health")
    lines = server.log_file.read_text().splitlines()
    assert lines and all(LINE.match(line) for line in lines), [l for l in lines if not LINE.match(l)][:3]
    assert any(" GET /health 200 " in line for line in lines)
    assert any(" POST /api/login 401 " in line for line in lines)
    stamp = datetime.strptime(LINE.match(lines[-1]).group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=5)
    text = server.log_file.read_text()
    assert APP_PASSWORD not in text and "chatai:***@" in text
    assert not [line for line in lines if " ERROR " in line]


def test_database_down(tmp_path):
    """DB unreachable: /health is 503 with status error, other endpoints 500, each logged as ERROR."""
    closed = port_in_range()
    srv = AppServer(APP_SRC, f"postgresql://chatai:{APP_PASSWORD}@127.0.0.1:{closed}/chatai", tmp_path).start()
    try:
        resp = http("GET", srv.base + "/health")
        assert resp.status == 503 and resp.json()["status"] == "error"
        assert http("POST", srv.base + "/api/login",
                    json_body={"email": "test@example.com", "password": "testpass"}).status == 500
        assert http("GET", srv.base + "/api/version").json()["alembic_revision"] is None
    finally:
        srv.stop()
    lines = srv.log_file.read_text().splitlines()
    errors = [line for line in lines if LINE.match(line) and LINE.match(line).group(2) == "ERROR"]
    assert any("GET /health 503" in line for line in errors)
    assert any("unhandled exception POST /api/login" in line for line in errors)
    assert any("POST /api/login 500" in line for line in errors)
    assert all(LINE.match(line) for line in lines)
    assert APP_PASSWORD not in srv.log_file.read_text()
