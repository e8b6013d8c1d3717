"""The bot manager against real processes: status, worker restart, clean stop, port in use, state."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from .conftest import (NODE, free_port, get, port_is_open, status_where, wait_for, worker_pids,
                       write_config)

pytestmark = pytest.mark.timeout(90)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR) \[(manager|worker-\d+)\] ")


def start_ok(factory, app, workers=3, **kw):
    manager = factory.start(app, **kw)
    env = kw.get("env") or {}
    config = env.get("WORKERS_CONFIG") or app / "config" / "production.json"
    port = int(env.get("STATUS_PORT") or json.loads(open(config).read())["status_port"])
    code, body = wait_for(status_where(port, lambda c, b: c == 200 and b["active_workers"] == workers), 15,
                          what=f"{workers} active workers")
    return manager, port, body


def test_status_health_and_worker_processes(app_factory):
    app = app_factory.app()
    port = free_port()
    write_config(app, port)
    manager, port, body = start_ok(app_factory, app)

    assert body["status"] == "ok"
    assert body["expected_workers"] == 3 and body["active_workers"] == 3
    assert body["release"] == "v2.0.0"
    assert body["pid"] == manager.pid
    assert [w["id"] for w in body["workers"]] == [1, 2, 3]
    for w in body["workers"]:
        assert {"id", "pid", "uptime_s", "messages_handled", "restarts"} <= set(w)
        assert w["restarts"] == 0 and isinstance(w["pid"], int)

    procs = worker_pids(app)
    assert sorted(procs.values()) == ["1", "2", "3"]
    assert sorted(procs) == sorted(w["pid"] for w in body["workers"])
    assert (app / "state" / "manager.pid").read_text().strip() == str(manager.pid)

    # messages are being handled and reported
    wait_for(status_where(port, lambda c, b: all(w["messages_handled"] > 0 for w in b["workers"])), 5,
             what="message counters")

    code, health, headers = get(port, "/health")
    assert code == 200
    assert health == {"status": "ok", "active_workers": 3, "expected_workers": 3, "release": "v2.0.0"}
    assert headers["Content-Type"].startswith("application/json")
    assert get(port, "/nope")[0] == 404
    assert get(port, "/status", method="POST")[0] == 405

    lines = [l for l in manager.output().splitlines() if l.strip()]
    assert lines and all(LOG_LINE.match(l) for l in lines), lines
    assert manager.stop() == 0


def test_killed_worker_is_restarted(app_factory):
    app = app_factory.app()
    write_config(app, free_port())
    manager, port, body = start_ok(app_factory, app)
    victim = next(w for w in body["workers"] if w["id"] == 2)
    os.kill(victim["pid"], signal.SIGKILL)

    code, after = wait_for(status_where(port, lambda c, b: c == 200 and b["workers"][1]["restarts"] == 1
                                        and b["workers"][1]["pid"] not in (None, victim["pid"])
                                        and b["active_workers"] == 3), 10, what="worker 2 restarted")
    assert after["workers"][1]["last_exit"]["signal"] == "SIGKILL"
    assert after["workers"][0]["restarts"] == after["workers"][2]["restarts"] == 0
    procs = worker_pids(app)
    assert len(procs) == 3 and victim["pid"] not in procs
    assert re.search(r"Z ERROR \[manager\] worker 2 \(pid %d\) crashed" % victim["pid"], manager.output())


def test_sigterm_stops_workers_and_closes_port(app_factory):
    app = app_factory.app()
    write_config(app, free_port())
    manager, port, body = start_ok(app_factory, app)
    started = time.monotonic()
    manager.proc.send_signal(signal.SIGTERM)
    assert manager.proc.wait(5) == 0
    assert time.monotonic() - started < 5
    assert not worker_pids(app)
    assert not port_is_open(port)
    assert not (app / "state" / "manager.pid").exists()
    assert json.loads((app / "state" / "status.json").read_text())["status"] == "stopped"


def test_sigint_stops_too(app_factory):
    app = app_factory.app()
    write_config(app, free_port())
    manager, port, _ = start_ok(app_factory, app)
    assert manager.stop(signal.SIGINT) == 0
    assert not worker_pids(app) and not port_is_open(port)


def test_workers_exit_when_the_manager_dies(app_factory):
    app = app_factory.app()
    write_config(app, free_port())
    manager, port, _ = start_ok(app_factory, app)
    manager.stop(signal.SIGKILL)
    wait_for(lambda: not worker_pids(app), 5, what="orphaned workers to exit")


def test_port_in_use_is_refused_with_the_port_named(app_factory):
    app = app_factory.app()
    port = free_port()
    write_config(app, port)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        manager = app_factory.start(app)
        code = manager.proc.wait(10)
    out = manager.output()
    assert code != 0
    assert f"status port {port}" in out and "already in use" in out
    assert not worker_pids(app)
    assert not (app / "state" / "manager.pid").exists()


def test_status_port_env_overrides_config(app_factory):
    app = app_factory.app()
    config_port, env_port = free_port(), None
    write_config(app, config_port, workers=2)
    while env_port in (None, config_port):
        env_port = free_port()
    manager, port, body = start_ok(app_factory, app, workers=2, env={"STATUS_PORT": str(env_port)})
    assert port == env_port and body["expected_workers"] == 2
    assert not port_is_open(config_port)


def test_workers_config_env_and_bad_config(app_factory, tmp_path):
    app = app_factory.app()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"workers": 1, "status_port": free_port()}))
    manager, port, body = start_ok(app_factory, app, workers=1, env={"WORKERS_CONFIG": str(elsewhere)})
    assert body["expected_workers"] == 1
    manager.stop()

    missing = app_factory.start(app)  # no config/production.json in a fresh release tree
    assert missing.proc.wait(10) != 0
    assert "production.json" in missing.output()

    elsewhere.write_text(json.dumps({"workers": "three", "status_port": free_port()}))
    invalid = app_factory.start(app, env={"WORKERS_CONFIG": str(elsewhere)})
    assert invalid.proc.wait(10) != 0
    assert '"workers" must be an integer' in invalid.output()


def test_clean_restart_removes_runtime_state(app_factory):
    app = app_factory.app()
    write_config(app, free_port())
    state = app / "state"
    state.mkdir()
    (state / "manager.pid").write_text("999999\n")
    (state / "leftover.json").write_text("{}")
    cmd = json.loads((app / "package.json").read_text())["scripts"]["clean-restart"].split()
    assert cmd[0] == "node"
    manager, port, body = start_ok(app_factory, app, args=cmd[2:])
    assert not (state / "leftover.json").exists()
    assert (state / "manager.pid").read_text().strip() == str(manager.pid)
    assert "clean restart: removed runtime state" in manager.output()

    # A second clean restart (other port) must not wipe the state of the manager that still runs.
    other = app_factory.start(app, args=cmd[2:], env={"STATUS_PORT": str(free_port())})
    assert other.proc.wait(10) != 0
    assert f"still running (pid {manager.pid}" in other.output()
    assert (state / "manager.pid").read_text().strip() == str(manager.pid)
    assert len(worker_pids(app)) == 3


def test_npm_start(app_factory):
    npm = subprocess.run(["which", "npm"], capture_output=True, text=True).stdout.strip()
    if not npm:
        pytest.skip("npm is not installed")
    app = app_factory.app()
    port = free_port()
    write_config(app, port)
    log = open(app / "npm.log", "wb")
    proc = subprocess.Popen([npm, "start"], cwd=app, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(status_where(port, lambda c, b: c == 200 and b["active_workers"] == 3), 20, what="npm start")
        manager_pid = int((app / "state" / "manager.pid").read_text())
        os.kill(manager_pid, signal.SIGTERM)
        wait_for(lambda: not port_is_open(port) and not worker_pids(app), 5, what="stop")
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            pid_file = app / "state" / "manager.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.slow
def test_bad_release_reports_degraded(app_factory):
    app = app_factory.app("v2.1.0")
    port = free_port()
    write_config(app, port)
    manager = app_factory.start(app)
    started = time.monotonic()
    code, body = wait_for(status_where(port, lambda c, b: c == 503 and b["status"] == "degraded"
                                       and any(w["restarts"] > 0 for w in b["workers"])), 10,
                          what="degraded status with crashing workers")
    assert time.monotonic() - started < 10
    assert body["release"] == "v2.1.0"
    assert body["active_workers"] < body["expected_workers"] == 3
    # it stays degraded: the workers never become ready
    time.sleep(3)
    code, body, _ = get(port)
    assert code == 503 and body["active_workers"] == 0
    assert get(port, "/health")[0] == 503
    out = manager.output()
    assert "TypeError" in out and re.search(r"Z ERROR \[manager\] worker \d \(pid \d+\) crashed", out)
    assert manager.stop() == 0
    assert not worker_pids(app) and not port_is_open(port)
