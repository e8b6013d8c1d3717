"""service_health for real: HTTP against a live server, login token, PostgreSQL, processes, logs."""
from __future__ import annotations

import datetime
import sys

import pytest

from .conftest import LOGIN_PASSWORD, TOKEN, free_port, run_module

pytestmark = pytest.mark.timeout(300)


def by_name(result):
    return {c["name"]: c for c in result["checklist"]}


def test_fast_endpoint_passes(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "health", "type": "http", "url": f"{http_app.base}/health", "samples": 10, "concurrency": 3,
         "json_equals": {"status": "ok", "db.up": True}}]})
    assert not result.get("failed"), result["msg"] if "msg" in result else result
    check = by_name(result)["health"]
    assert check["ok"] is True and check["samples"]["count"] == 10 and check["samples"]["errors"] == 0
    assert check["samples"]["p95_ms"] < 2000 and check["threshold"]["max_p95_ms"] == 2000
    assert result["changed"] is False and result["summary"] == {
        "passed": 1, "failed": 0, "total": 1, "healthy": True, "failed_checks": [], "failed_required": [],
        "crossed": []}
    assert sum(1 for path, _auth in http_app.hits if path == "/health") >= 10


def test_slow_endpoint_fails_naming_the_p95_threshold(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "health", "type": "http", "url": f"{http_app.base}/health"},
        {"name": "dialogs", "type": "http", "url": f"{http_app.base}/slow", "samples": 4, "concurrency": 2,
         "max_p95_ms": 200}]})
    assert result["failed"] is True and result["changed"] is False
    assert result["summary"]["failed_checks"] == ["dialogs"]
    crossed = result["summary"]["crossed"]
    assert len(crossed) == 1 and crossed[0].startswith("dialogs: p95 ") and crossed[0].endswith(" ms > 200 ms")
    p95 = by_name(result)["dialogs"]["samples"]["p95_ms"]
    assert p95 >= 400
    assert "dialogs (p95 " in result["msg"] and "> 200 ms" in result["msg"]


def test_plan_default_threshold_applies(http_app):
    # 0.4 s is within the plan's 2000 ms: the same endpoint passes with the default threshold.
    result = run_module("service_health", {"checks": [
        {"name": "dialogs", "type": "http", "url": f"{http_app.base}/slow", "samples": 2, "concurrency": 2}]})
    assert not result.get("failed") and by_name(result)["dialogs"]["threshold"]["max_p95_ms"] == 2000


def test_baseline_ratio(http_app):
    checks = [{"name": "dialogs", "type": "http", "url": f"{http_app.base}/medium", "samples": 3}]
    degraded = run_module("service_health", {"checks": checks, "baseline": {"dialogs": 20}})
    assert degraded["failed"] is True
    crossed = degraded["summary"]["crossed"]
    assert len(crossed) == 1 and "> 3x baseline 20 ms (60 ms)" in crossed[0]
    check = by_name(degraded)["dialogs"]
    assert check["samples"]["ratio_to_baseline"] > 3 and "baseline" in check["detail"]
    assert check["threshold"]["max_p95_from_baseline_ms"] == 60

    fine = run_module("service_health", {"checks": checks, "baseline": {"dialogs": 100}})
    assert not fine.get("failed"), fine.get("msg")

    tolerant = run_module("service_health", {"checks": checks, "baseline": {"dialogs": 20},
                                             "max_ratio_to_baseline": 20})
    assert not tolerant.get("failed"), tolerant.get("msg")


def test_login_token_is_passed_on_and_never_returned(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "login", "type": "login", "url": f"{http_app.base}/api/login", "email": "ops@example.com",
         "password": LOGIN_PASSWORD},
        {"name": "profile", "type": "http", "url": f"{http_app.base}/api/users/profile", "use_token": True,
         "json_equals": {"email": "ops@example.com"}}]})
    assert not result.get("failed"), result.get("msg")
    assert [c["ok"] for c in result["checklist"]] == [True, True]
    assert by_name(result)["login"]["value"] == {"status": 200, "token_obtained": True}
    assert ("/api/users/profile", f"Bearer {TOKEN}") in http_app.hits
    assert TOKEN not in result["_raw"] and LOGIN_PASSWORD not in result["_raw"]


def test_wrong_login_fails_and_profile_without_token_fails(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "login", "type": "login", "url": f"{http_app.base}/api/login", "email": "ops@example.com",
         "password": "wrong-pw"},
        {"name": "profile", "type": "http", "url": f"{http_app.base}/api/users/profile", "use_token": True}]})
    assert result["failed"] is True
    checks = by_name(result)
    assert "Failed to log in as ops@example.com: status 401" in checks["login"]["detail"]
    assert "no token" in checks["profile"]["detail"]
    assert "wrong-pw" not in result["_raw"]


def test_unreachable_url_fails_clearly():
    port = free_port()
    result = run_module("service_health", {"checks": [
        {"name": "health", "type": "http", "url": f"http://127.0.0.1:{port}/health", "timeout": 2}]})
    assert result["failed"] is True
    detail = by_name(result)["health"]["detail"]
    assert f"Failed to reach http://127.0.0.1:{port}/health" in detail and "refused" in detail.lower()
    assert result["msg"].startswith("Failed to validate service health: 1 of 1 required checks failed: health")


def test_status_and_error_rate(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "broken", "type": "http", "url": f"{http_app.base}/broken", "samples": 3},
        {"name": "expected 500", "type": "http", "url": f"{http_app.base}/broken", "status": [500]}]})
    checks = by_name(result)
    assert checks["broken"]["ok"] is False and checks["expected 500"]["ok"] is True
    assert "broken: error rate 100% > 1% (3 of 3 samples failed)" in result["summary"]["crossed"]


def test_optional_check_does_not_fail_the_module(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "health", "type": "http", "url": f"{http_app.base}/health"},
        {"name": "broken", "type": "http", "url": f"{http_app.base}/broken", "required": False}]})
    assert not result.get("failed")
    assert result["summary"]["healthy"] is True and result["summary"]["failed_checks"] == ["broken"]


def test_retries_until_healthy_then_give_up(http_app, tmp_path):
    # A log that is bad now, checked 3 times 0.5 s apart: attempts are counted, still unhealthy.
    log = tmp_path / "app.log"
    log.write_text(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()} ERROR still broken\n")
    result = run_module("service_health", {"checks": [{"name": "log", "type": "log", "path": str(log)}],
                                           "retries": 2, "delay": 0.5})
    assert result["failed"] is True and result["attempts"] == 3 and result["elapsed_s"] >= 1.0
    result = run_module("service_health", {"checks": [{"name": "log", "type": "log", "path": str(log)}],
                                           "deadline_s": 1.2, "delay": 0.5})
    assert result["failed"] is True and result["attempts"] == 3


# --- PostgreSQL --------------------------------------------------------------------------------------

def test_postgres_check_passes_with_table_counts(pg):
    result = run_module("service_health", {
        "postgres": {"login_host": "127.0.0.1", "login_port": pg.port, "login_user": "postgres",
                     "login_password": pg.password, "login_db": "chatai"},
        "checks": [{"name": "database", "type": "postgres", "tables": ["users", "assistants", "public.dialogs"]}]})
    assert not result.get("failed"), result.get("msg")
    check = by_name(result)["database"]
    value = check["value"]
    assert value["select_1"] is True and value["server_version"].startswith("18")
    assert value["tables"] == {"users": 25, "assistants": 7, "public.dialogs": 0}
    assert value["max_connections"] == 40 and 1 <= value["connections"] < 40
    assert check["threshold"] == {"max_connections_percent": 80}
    assert pg.password not in result["_raw"]


def test_postgres_connection_saturation_and_unreadable_table(pg):
    result = run_module("service_health", {"checks": [
        {"name": "saturation", "type": "postgres", "database_url": pg.dsn("chatai"), "max_connections_percent": 1},
        {"name": "tables", "type": "postgres", "database_url": pg.dsn("chatai"), "tables": ["users", "no_such"]}]})
    assert result["failed"] is True
    checks = by_name(result)
    assert checks["saturation"]["ok"] is False
    assert checks["saturation"]["crossed"][0].startswith("saturation: connections ")
    assert checks["saturation"]["crossed"][0].endswith("of max_connections (1/40) > 1%")
    assert checks["tables"]["ok"] is False and "tables not readable: no_such" in checks["tables"]["detail"]
    assert checks["tables"]["value"]["tables"] == {"users": 25, "no_such": None}
    assert pg.password not in result["_raw"]


def test_postgres_wrong_password_fails_clearly(pg):
    result = run_module("service_health", {"checks": [
        {"name": "database", "type": "postgres", "login_port": pg.port, "login_password": "not-the-pw-123",
         "login_db": "chatai"}]})
    assert result["failed"] is True
    detail = by_name(result)["database"]["detail"]
    assert detail.startswith(f"Failed to connect to PostgreSQL postgres@127.0.0.1:{pg.port}/chatai")
    assert "password authentication failed" in detail
    assert "not-the-pw-123" not in result["_raw"]


def test_postgres_malformed_url_fails_clearly():
    result = run_module("service_health", {"checks": [
        {"name": "database", "type": "postgres", "database_url": "mysql://x@y/z"}]})
    assert result["failed"] is True
    assert "Failed to parse database_url: malformed database_url" in by_name(result)["database"]["detail"]


# --- processes, logs, disk, memory -----------------------------------------------------------------------

def test_process_count_and_percentage(spawn):
    marker = "replyx-appside-worker"
    for _i in range(2):
        spawn([sys.executable, "-c", "import time; time.sleep(120)", marker])
    result = run_module("service_health", {"checks": [
        {"name": "workers", "type": "process", "pattern": marker, "expected": 2},
        {"name": "at least 2", "type": "process", "pattern": marker, "min_count": 2}]})
    assert not result.get("failed"), result.get("msg")
    assert by_name(result)["workers"]["value"] == 2  # the ansible command line holding the pattern is not counted

    result = run_module("service_health", {"checks": [
        {"name": "workers", "type": "process", "pattern": marker, "expected": 3}]})
    assert result["failed"] is True
    assert result["summary"]["crossed"] == ["workers: 2 of 3 expected processes (66.7%) < 95%"]


def test_process_check_fails_when_nothing_runs():
    result = run_module("service_health", {"checks": [
        {"name": "workers", "type": "process", "pattern": "replyx-no-such-process-xyz"}]})
    assert result["failed"] is True and result["summary"]["crossed"] == ["workers: 0 processes < 1"]


def test_log_errors_in_last_minutes(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (now - datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = (now - datetime.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.123+00:00")
    log = tmp_path / "backend.log"
    log.write_text(f"{old} ERROR old outage\n{old} Traceback (most recent call last):\n"
                   f"{recent} INFO request ok\n{recent} INFO request ok\n")
    clean = run_module("service_health", {"checks": [{"name": "log", "type": "log", "path": str(log)}]})
    assert not clean.get("failed"), clean.get("msg")
    assert by_name(clean)["log"]["value"] == 0 and by_name(clean)["log"]["lines_scanned"] == 2

    with log.open("a") as fh:
        fh.write(f"{recent} ERROR dialogs: column widget_version does not exist\n"
                 "Traceback (most recent call last):\n  File \"main.py\", line 1\n"
                 f"{recent} CRITICAL database unreachable\n")
    dirty = run_module("service_health", {"checks": [{"name": "log", "type": "log", "path": str(log)}]})
    assert dirty["failed"] is True
    check = by_name(dirty)["log"]
    assert check["value"] == 3 and dirty["summary"]["crossed"] == ["log: 3 error lines in the last 10 minutes > 0"]
    assert any("widget_version" in line for line in check["matched_lines"])
    tolerant = run_module("service_health", {"checks": [
        {"name": "log", "type": "log", "path": str(log), "max_matches": 3, "patterns": ["CRITICAL", "ERROR"]}]})
    assert not tolerant.get("failed") and by_name(tolerant)["log"]["value"] == 2


def test_disk_and_memory(tmp_path):
    result = run_module("service_health", {"checks": [
        {"name": "disk", "type": "disk", "path": str(tmp_path), "max_percent": 100},
        {"name": "memory", "type": "memory", "max_percent": 100}]})
    assert not result.get("failed"), result.get("msg")
    assert 0 < by_name(result)["disk"]["value"] <= 100 and 0 < by_name(result)["memory"]["value"] <= 100
    result = run_module("service_health", {"checks": [
        {"name": "disk", "type": "disk", "path": str(tmp_path), "max_percent": 0}]})
    assert result["failed"] is True and result["summary"]["crossed"][0].startswith(f"disk: disk {tmp_path} usage ")


def test_check_mode_runs_the_checks(http_app):
    result = run_module("service_health", {"checks": [
        {"name": "health", "type": "http", "url": f"{http_app.base}/health"}]}, check_mode=True)
    assert not result.get("failed") and result["changed"] is False and result["checklist"][0]["ok"] is True


def test_unknown_check_type_is_refused():
    result = run_module("service_health", {"checks": [{"name": "x", "type": "smoke"}]})
    assert result["failed"] is True and "http, login, postgres, process, log, disk, memory" in result["msg"]
