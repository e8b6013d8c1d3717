"""service_health against the real lab backend (lab/app/backend): the current release passes the plan's
immediate checks; the bad release v1.2.0 fails the dialogs check and the summary names the threshold."""
from __future__ import annotations

import pytest

from tests.lab_app.conftest import APP_SRC, PYTHON, AppServer, PgLab, alembic, assemble_release, run_app_cmd
from tests.pgserver import PgServer, embedded_bin_dir

from .conftest import free_port, run_module

pytestmark = [pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def lab_db():
    server = PgServer(embedded_bin_dir(), port=free_port(), archive=False).start()
    try:
        server.wait_ready()
        db = PgLab(server).database()
        alembic(db.url, "upgrade", "head")
        run_app_cmd([str(PYTHON), "scripts/seed.py"], DATABASE_URL=db.url)
        yield db
    finally:
        server.stop()


def plan_checks(srv: AppServer, db) -> list:
    """The plan's immediate checks (Validation & Testing) as service_health checks."""
    return [
        {"name": "health", "type": "http", "url": f"{srv.base}/health",
         "json_equals": {"status": "ok", "database": "ok"}},
        {"name": "database", "type": "postgres", "database_url": db.url,
         "tables": ["users", "assistants", "dialogs", "dialog_messages"]},
        {"name": "login", "type": "login", "url": f"{srv.base}/api/login", "email": "test@example.com",
         "password": "testpass"},
        {"name": "profile", "type": "http", "url": f"{srv.base}/api/users/profile", "use_token": True},
        {"name": "assistants", "type": "http", "url": f"{srv.base}/api/assistants", "use_token": True},
        {"name": "dialogs", "type": "http", "url": f"{srv.base}/api/dialogs", "use_token": True, "samples": 3,
         "concurrency": 3},
        {"name": "backend log", "type": "log", "path": str(srv.log_file), "minutes": 10},
    ]


def test_current_release_passes_the_plan_checks(lab_db, tmp_path):
    srv = AppServer(APP_SRC, lab_db.url, tmp_path / "run", port=free_port()).start()
    try:
        result = run_module("service_health", {"checks": plan_checks(srv, lab_db)})
    finally:
        srv.stop()
    assert not result.get("failed"), result.get("msg")
    checks = {c["name"]: c for c in result["checklist"]}
    assert all(c["ok"] for c in checks.values())
    assert checks["database"]["value"]["tables"]["users"] > 0
    assert checks["dialogs"]["samples"]["p95_ms"] < 2000
    assert "testpass" not in result["_raw"]


def test_bad_release_fails_the_dialogs_check(lab_db, tmp_path):
    tree = tmp_path / "v1.2.0"
    assemble_release("v1.2.0", tree)
    srv = AppServer(tree, lab_db.url, tmp_path / "run", port=free_port()).start()
    try:
        result = run_module("service_health", {"checks": plan_checks(srv, lab_db)})
    finally:
        srv.stop()
    assert result["failed"] is True
    assert result["summary"]["failed_checks"] == ["dialogs"]
    crossed = result["summary"]["crossed"]
    assert len(crossed) == 1 and crossed[0].startswith("dialogs: p95 ") and crossed[0].endswith(" ms > 2000 ms")
    assert "dialogs (p95 " in result["msg"]
