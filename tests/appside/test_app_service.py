"""app_service for real: a pidfile-managed python http.server and a PM2 app, restarted, stopped, verified."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from .conftest import PM2, cmdline, free_port, pid_alive, port_open, run_module, wait_for

pytestmark = pytest.mark.timeout(300)


def answers(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as resp:
        return resp.status


# --- pidfile ------------------------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    """Options of a python http.server run by the pidfile manager; kills the server if a test leaves it."""
    port = free_port()
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("replyx\n")
    opts = {"name": "web", "manager": "pidfile", "pidfile": str(tmp_path / "web.pid"),
            "program": rf"http\.server {port} ", "command": [sys.executable, "-m", "http.server", str(port),
                                                             "--bind", "127.0.0.1"],
            "chdir": str(docroot), "log_file": str(tmp_path / "web.log"), "wait_port": port,
            "environment": {"REPLYX_TEST": "1"}, "stop_timeout": 5, "wait_timeout": 20}
    opts["port"] = port
    yield opts
    for proc in os.listdir("/proc"):
        if proc.isdigit() and f"http.server {port} " in cmdline(int(proc)) + " ":
            os.kill(int(proc), signal.SIGKILL)


def opts_of(web, **kw):
    args = {k: v for k, v in web.items() if k != "port"}
    args.update(kw)
    return args


def test_pidfile_start_restart_stop(web):
    port = web["port"]
    started = run_module("app_service", opts_of(web, state="started"))
    assert not started.get("failed"), started.get("msg")
    assert started["changed"] is True and started["old_pids"] == [] and len(started["new_pids"]) == 1
    pid = started["new_pids"][0]
    assert open(web["pidfile"]).read().strip() == str(pid)
    assert "http.server" in cmdline(pid) and answers(port) == 200
    with open(f"/proc/{pid}/environ", "rb") as fh:
        assert b"REPLYX_TEST=1" in fh.read().split(b"\0")

    again = run_module("app_service", opts_of(web, state="started"))
    assert again["changed"] is False and again["old_pids"] == again["new_pids"] == [pid] and again["steps"] == []

    restarted = run_module("app_service", opts_of(web, state="restarted"), diff=True)
    assert not restarted.get("failed"), restarted.get("msg")
    assert restarted["changed"] is True and restarted["old_pids"] == [pid]
    new_pid = restarted["new_pids"][0]
    assert new_pid != pid and not pid_alive(pid) and answers(port) == 200
    assert restarted["diff"]["before"]["pids"] == [pid] and restarted["diff"]["after"]["pids"] == [new_pid]

    planned = run_module("app_service", opts_of(web, state="stopped"), check_mode=True)
    assert planned["changed"] is True and planned["steps"][0].startswith(f"send SIGTERM to PID {new_pid}")
    assert pid_alive(new_pid) and answers(port) == 200

    stopped = run_module("app_service", opts_of(web, state="stopped"))
    assert not stopped.get("failed"), stopped.get("msg")
    assert stopped["changed"] is True and stopped["old_pids"] == [new_pid] and stopped["new_pids"] == []
    assert not pid_alive(new_pid) and not port_open(port) and not os.path.exists(web["pidfile"])

    again = run_module("app_service", opts_of(web, state="stopped"))
    assert again["changed"] is False and again["steps"] == []


def test_pidfile_check_mode_starts_nothing(web):
    result = run_module("app_service", opts_of(web, state="started"), check_mode=True)
    assert result["changed"] is True and result["commands"] == [web["command"]]
    assert not os.path.exists(web["pidfile"]) and not port_open(web["port"])


def test_stale_pidfile_naming_an_unrelated_process_is_never_signalled(web, spawn):
    sleeper = spawn(["sleep", "300"])
    with open(web["pidfile"], "w") as fh:
        fh.write(f"{sleeper.pid}\n")

    stop = run_module("app_service", opts_of(web, state="stopped"))
    assert not stop.get("failed"), stop.get("msg")
    assert stop["changed"] is False and stop["old_pids"] == []
    assert stop["stale_pidfile"]["pid"] == sleeper.pid
    assert stop["stale_pidfile"]["reason"] == f"PID {sleeper.pid} belongs to another program: sleep 300"
    assert sleeper.poll() is None

    restart = run_module("app_service", opts_of(web, state="restarted"))
    assert not restart.get("failed"), restart.get("msg")
    assert restart["stale_pidfile"]["pid"] == sleeper.pid and restart["old_pids"] == []
    assert "replace stale pidfile" in restart["steps"][0] and "not signalled" in restart["steps"][0]
    new_pid = restart["new_pids"][0]
    assert new_pid != sleeper.pid and open(web["pidfile"]).read().strip() == str(new_pid)
    assert answers(web["port"]) == 200
    assert sleeper.poll() is None and pid_alive(sleeper.pid), "the unrelated process must survive"

    run_module("app_service", opts_of(web, state="stopped"))
    assert sleeper.poll() is None


def test_stale_pidfile_of_a_dead_process(web):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with open(web["pidfile"], "w") as fh:
        fh.write(f"{gone.pid}\n")
    result = run_module("app_service", opts_of(web, state="started"))
    assert not result.get("failed"), result.get("msg")
    assert result["stale_pidfile"]["reason"] == f"no process with PID {gone.pid}"
    assert result["changed"] is True and answers(web["port"]) == 200


def test_pidfile_missing_without_a_start_command(web):
    result = run_module("app_service", opts_of(web, state="started", command=None))
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"] == "Failed to start web: the pidfile manager needs command to start web"
    stop = run_module("app_service", opts_of(web, state="stopped", command=None))
    assert not stop.get("failed") and stop["changed"] is False and stop["status_before"].endswith("missing")


def test_a_command_that_dies_at_once_is_reported(web, tmp_path):
    result = run_module("app_service", opts_of(web, state="started",
                                               command=[sys.executable, "-c", "import sys; sys.exit(3)"],
                                               program="python"))
    assert result["failed"] is True and "exited with rc 3" in result["msg"]


def test_pidfile_needs_a_program_to_verify(web):
    result = run_module("app_service", opts_of(web, state="stopped", program=None))
    assert result["failed"] is True and "needs program" in result["msg"]


def test_unknown_manager_is_refused_with_the_choices():
    result = run_module("app_service", {"name": "backend", "manager": "supervisord", "state": "restarted"})
    assert result["failed"] is True
    assert "value of manager must be one of: systemd, pm2, pidfile, got: supervisord" in result["msg"]


# --- pm2 ----------------------------------------------------------------------------------------------

SERVER = """
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "release": os.environ.get("RELEASE")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def pm2_pids(home, name):
    out = subprocess.run([str(PM2), "jlist"], env=dict(os.environ, PM2_HOME=str(home)), capture_output=True,
                         text=True, timeout=60).stdout
    apps = json.loads(out[out.find("["):])
    return sorted(a["pid"] for a in apps if a["name"] == name and a["pm2_env"]["status"] == "online")


@pytest.mark.skipif(not os.access(PM2, os.X_OK), reason=f"pm2 is not installed at {PM2}")
def test_pm2_register_restart_reload_stop(pm2_home, tmp_path):
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    base = {"name": "replyx-backend", "manager": "pm2", "pm2_bin": str(PM2), "pm2_home": str(pm2_home),
            "script": str(script), "interpreter": sys.executable, "args": [str(port)], "chdir": str(tmp_path),
            "environment": {"RELEASE": "stable"}, "wait_port": port, "wait_url": f"http://127.0.0.1:{port}/",
            "wait_timeout": 30}

    planned = run_module("app_service", dict(base, state="started"), check_mode=True)
    assert planned["changed"] is True and planned["commands"][0][1:4] == ["start", str(script), "--name"]
    assert not port_open(port) and not (pm2_home / "pm2.pid").exists(), "check mode must not even start PM2"

    started = run_module("app_service", dict(base, state="started"))
    assert not started.get("failed"), started.get("msg")
    assert started["changed"] is True and started["old_pids"] == [] and len(started["new_pids"]) == 1
    first = started["new_pids"][0]
    assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).read()) == {
        "pid": first, "release": "stable"}

    again = run_module("app_service", dict(base, state="started"))
    assert again["changed"] is False and again["new_pids"] == [first]

    restarted = run_module("app_service", dict(base, state="restarted", environment={"RELEASE": "rolled-back"}))
    assert not restarted.get("failed"), restarted.get("msg")
    assert restarted["changed"] is True and restarted["old_pids"] == [first]
    second = restarted["new_pids"][0]
    assert second != first and not pid_alive(first) and pm2_pids(pm2_home, "replyx-backend") == [second]
    assert restarted["commands"][0][1:] == ["restart", "replyx-backend", "--update-env"]
    assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).read())["release"] == "rolled-back"

    reloaded = run_module("app_service", dict(base, state="reloaded"))
    assert not reloaded.get("failed"), reloaded.get("msg")
    assert reloaded["changed"] is True and reloaded["new_pids"] != [second]
    assert reloaded["commands"][0][1:3] == ["reload", "replyx-backend"]

    stopped = run_module("app_service", dict(base, state="stopped"))
    assert not stopped.get("failed"), stopped.get("msg")
    assert stopped["changed"] is True and stopped["new_pids"] == []
    wait_for(lambda: not port_open(port), 10, "the app's port to close")
    assert pm2_pids(pm2_home, "replyx-backend") == []

    health = run_module("service_health", {"checks": [
        {"name": "backend", "type": "process", "pm2_app": "replyx-backend", "pm2_bin": str(PM2),
         "pm2_home": str(pm2_home)}]})
    assert health["failed"] is True and health["summary"]["crossed"] == ["backend: 0 processes < 1"]

    restarted = run_module("app_service", dict(base, state="restarted"))
    assert restarted["changed"] is True and len(restarted["new_pids"]) == 1
    health = run_module("service_health", {"checks": [
        {"name": "backend", "type": "process", "pm2_app": "replyx-backend", "pm2_bin": str(PM2),
         "pm2_home": str(pm2_home), "expected": 1}]})
    assert not health.get("failed"), health.get("msg")
    assert health["checklist"][0]["pids"] == restarted["new_pids"]


@pytest.mark.skipif(not os.access(PM2, os.X_OK), reason=f"pm2 is not installed at {PM2}")
def test_pm2_unknown_app_without_script_is_a_clear_error(pm2_home):
    result = run_module("app_service", {"name": "ghost", "manager": "pm2", "pm2_bin": str(PM2),
                                        "pm2_home": str(pm2_home), "state": "restarted"})
    assert result["failed"] is True
    assert result["msg"] == "Failed to start PM2 app ghost: PM2 does not know ghost; give script (or ecosystem) to start it"


@pytest.mark.skipif(not os.access(PM2, os.X_OK), reason=f"pm2 is not installed at {PM2}")
def test_pm2_app_that_exits_at_start_fails_fast_naming_the_crash_loop(pm2_home, tmp_path):
    """A release that cannot start: PM2 restarts it in a loop. app_service says so within seconds
    instead of waiting the whole wait_timeout for a port that never opens."""
    port = free_port()
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('ImportError: no module named widgets', file=sys.stderr)\nsys.exit(3)\n")
    result = run_module("app_service", {
        "name": "replyx-broken", "manager": "pm2", "pm2_bin": str(PM2), "pm2_home": str(pm2_home),
        "script": str(script), "interpreter": sys.executable, "chdir": str(tmp_path), "state": "started",
        "wait_port": port, "wait_url": f"http://127.0.0.1:{port}/", "wait_timeout": 60})
    assert result["failed"] is True
    # the crash loop ends the wait (a timeout would say "port ... not answering after 60s")
    assert "replyx-broken" in result["msg"] and "exits at start" in result["msg"], result["msg"]
    assert not port_open(port)
