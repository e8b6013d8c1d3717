# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pidfile validation against real processes, and the argv app_service builds for systemctl and pm2."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _service as s
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "300"])
    # Between fork and exec the child is still a copy of this Python: wait until it runs sleep.
    for _i in range(100):
        if s.proc_cmdline(proc.pid) == "sleep 300":
            break
        time.sleep(0.02)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- pidfile reading and verification --------------------------------------------------------------

@pytest.mark.parametrize("content, pid, problem", [
    ("1234\n", 1234, None),
    ("  77  extra\n", 77, None),
    ("", None, "does not hold a PID ('')"),
    ("abc", None, "does not hold a PID ('abc')"),
    ("0", None, "does not hold a PID ('0')"),
    ("-5", None, "does not hold a PID ('-5')"),
])
def test_read_pidfile(tmp_path, content, pid, problem):
    path = tmp_path / "svc.pid"
    path.write_text(content)
    assert s.read_pidfile(str(path)) == (pid, problem)


def test_read_pidfile_missing(tmp_path):
    assert s.read_pidfile(str(tmp_path / "none.pid")) == (None, "missing")


def test_verify_pid_matches_program(sleeper):
    ok, reason, cmdline = s.verify_pid(sleeper.pid, program=r"^sleep 300$")
    assert ok and reason is None and cmdline == "sleep 300"
    ok, _reason, _cmd = s.verify_pid(sleeper.pid, exe=r"/sleep$")
    assert ok


def test_verify_pid_unrelated_program_is_refused(sleeper):
    ok, reason, cmdline = s.verify_pid(sleeper.pid, program=r"http\.server")
    assert not ok
    assert reason == "PID %d belongs to another program: sleep 300" % sleeper.pid
    ok, reason, _cmd = s.verify_pid(sleeper.pid, program="sleep", exe=r"python")
    assert not ok and "not python" in reason


def test_verify_pid_gone():
    pid = dead_pid()
    ok, reason, _cmd = s.verify_pid(pid, program="true")
    assert not ok and reason == "no process with PID %d" % pid


def test_verify_pid_zombie_is_not_running():
    proc = subprocess.Popen(["true"])
    # Not reaped yet: a zombie until wait().
    for _i in range(50):
        if s.proc_state(proc.pid) == "Z":
            break
        time.sleep(0.05)
    ok, reason, _cmd = s.verify_pid(proc.pid, program="true")
    proc.wait()
    assert not ok and "zombie" in reason


@pytest.mark.parametrize("name, number", [("TERM", signal.SIGTERM), ("SIGHUP", signal.SIGHUP), ("kill", signal.SIGKILL),
                                          ("15", 15)])
def test_signal_number(name, number):
    assert s.signal_number(name) == number


def test_signal_number_unknown():
    with pytest.raises(InputError, match="unknown signal SIGNOPE"):
        s.signal_number("NOPE")


# --- fakes for plans ---------------------------------------------------------------------------------

class FakeModule(object):
    def __init__(self, answers=None, check_mode=False):
        self.answers = answers or {}
        self.calls = []
        self.check_mode = check_mode
        self._diff = False
        self.params = {}

    def get_bin_path(self, name, required=False):
        return "/usr/bin/%s" % name

    def run_command(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        return self.answers.get(tuple(argv[1:]), (0, "", ""))


def params(**kw):
    base = dict((k, v.get("default")) for k, v in s.argument_spec().items())
    base.update(kw)
    return base


SYSTEMD_CASES = [
    # (state, running, expected verb or None)
    ("started", True, None),
    ("started", False, "start"),
    ("stopped", True, "stop"),
    ("stopped", False, None),
    ("restarted", True, "restart"),
    ("restarted", False, "restart"),
    ("reloaded", True, "reload"),
    ("reloaded", False, "start"),
]


@pytest.mark.parametrize("state, running, verb", SYSTEMD_CASES)
def test_systemd_plan_argv(state, running, verb):
    mgr = s.Systemd(FakeModule(), params(name="chatai-backend", manager="systemd"))
    steps = mgr.plan(state, dict(running=running, pids=[]))
    if verb is None:
        assert steps == []
    else:
        assert [st["argv"] for st in steps] == [["/usr/bin/systemctl", verb, "chatai-backend"]]


def test_systemd_status_reads_is_active_and_mainpid():
    module = FakeModule({("is-active", "api"): (0, "active\n", ""),
                         ("show", "--property", "MainPID", "--value", "api"): (0, "4242\n", "")})
    status = s.Systemd(module, params(name="api", manager="systemd")).status()
    assert status == dict(running=True, pids=[4242], detail="active")
    module = FakeModule({("is-active", "api"): (3, "inactive\n", ""),
                         ("show", "--property", "MainPID", "--value", "api"): (0, "0\n", "")})
    assert s.Systemd(module, params(name="api", manager="systemd")).status()["running"] is False


PM2 = "/opt/pm2/bin/pm2"


@pytest.mark.parametrize("state, before, expected", [
    ("started", dict(running=True, registered=True), []),
    ("started", dict(running=False, registered=True), [[PM2, "start", "bots"]]),
    ("stopped", dict(running=True, registered=True), [[PM2, "stop", "bots"]]),
    ("stopped", dict(running=False, registered=True), []),
    ("restarted", dict(running=True, registered=True), [[PM2, "restart", "bots"]]),
    ("reloaded", dict(running=True, registered=True), [[PM2, "reload", "bots"]]),
    ("reloaded", dict(running=False, registered=True), [[PM2, "start", "bots"]]),
    ("restarted", dict(running=False, registered=False),
     [[PM2, "start", "server.js", "--name", "bots", "--cwd", "/srv/w", "--interpreter", "node", "--", "--port", "3001"]]),
])
def test_pm2_plan_argv(state, before, expected):
    mgr = s.Pm2(FakeModule(), params(name="bots", manager="pm2", pm2_bin=PM2, script="server.js", chdir="/srv/w",
                                     interpreter="node", args=["--port", "3001"]))
    assert [st["argv"] for st in mgr.plan(state, dict(before, pids=[]))] == expected


def test_pm2_update_env_when_environment_given():
    mgr = s.Pm2(FakeModule(), params(name="bots", manager="pm2", pm2_bin=PM2, environment=dict(NODE_ENV="production")))
    steps = mgr.plan("restarted", dict(running=True, registered=True, pids=[1]))
    assert steps[0]["argv"] == [PM2, "restart", "bots", "--update-env"]


def test_pm2_ecosystem_wins():
    assert s.pm2_start_argv(PM2, params(name="bots", ecosystem="/srv/w/ecosystem.config.js", script="x.js")) == \
        [PM2, "start", "/srv/w/ecosystem.config.js", "--only", "bots"]


def test_pm2_unknown_app_without_script_is_refused():
    with pytest.raises(InputError, match="PM2 does not know bots"):
        s.pm2_start_argv(PM2, params(name="bots"))


def test_pm2_status_from_jlist(tmp_path, monkeypatch):
    monkeypatch.setattr(s, "pm2_daemon_running", lambda home: True)
    jlist = json.dumps([dict(name="bots", pid=11, pm2_env=dict(status="online")),
                        dict(name="bots", pid=12, pm2_env=dict(status="online")),
                        dict(name="api", pid=13, pm2_env=dict(status="online"))])
    module = FakeModule({("jlist",): (0, jlist, "")})
    status = s.Pm2(module, params(name="bots", pm2_bin=PM2, pm2_home=str(tmp_path))).status()
    assert status["pids"] == [11, 12] and status["registered"] and status["running"]
    assert module.calls[0][1]["environ_update"] == dict(PM2_HOME=str(tmp_path))


def test_pm2_no_daemon_means_no_apps_and_no_pm2_call(tmp_path):
    module = FakeModule()
    assert s.pm2_jlist(module, PM2, str(tmp_path)) == []
    assert module.calls == []


# --- pidfile plans -------------------------------------------------------------------------------------

def pidfile_params(tmp_path, **kw):
    base = params(name="web", manager="pidfile", pidfile=str(tmp_path / "web.pid"), program=r"http\.server",
                  command=[sys.executable, "-m", "http.server"])
    base.update(kw)
    return base


def test_pidfile_needs_program_or_exe(tmp_path):
    with pytest.raises(InputError, match="needs program"):
        s.Pidfile(FakeModule(), pidfile_params(tmp_path, program=None))


def test_pidfile_stale_unrelated_process_is_never_planned_for_a_signal(tmp_path, sleeper):
    (tmp_path / "web.pid").write_text("%d\n" % sleeper.pid)
    mgr = s.Pidfile(FakeModule(), pidfile_params(tmp_path))
    status = mgr.status()
    assert status["running"] is False and status["pidfile"] == "stale"
    assert status["stale"]["pid"] == sleeper.pid and "another program: sleep 300" in status["stale"]["reason"]
    assert mgr.plan("stopped", status) == []
    steps = mgr.plan("restarted", status)
    assert [st["action"] for st in steps] == ["unlink", "start"]
    assert all(st.get("pid") in (None,) for st in steps)


def test_pidfile_stop_refuses_if_pid_changed_owner(tmp_path, sleeper):
    mgr = s.Pidfile(FakeModule(), pidfile_params(tmp_path))
    with pytest.raises(SafetyRefusal, match="another program"):
        mgr._stop(dict(pid=sleeper.pid))
    assert sleeper.poll() is None


def test_pidfile_verified_process_is_stopped(tmp_path, sleeper):
    (tmp_path / "web.pid").write_text("%d\n" % sleeper.pid)
    mgr = s.Pidfile(FakeModule(), pidfile_params(tmp_path, program=r"^sleep 300$"))
    status = mgr.status()
    assert status["running"] and status["pids"] == [sleeper.pid]
    steps = mgr.plan("stopped", status)
    assert steps[0]["action"] == "stop" and steps[0]["pid"] == sleeper.pid
    mgr.execute(steps)
    assert sleeper.wait(5) == -signal.SIGTERM
    assert not (tmp_path / "web.pid").exists()


def test_pidfile_missing_start_without_command(tmp_path):
    mgr = s.Pidfile(FakeModule(), pidfile_params(tmp_path, command=None))
    status = mgr.status()
    assert status["pidfile"] == "missing"
    with pytest.raises(InputError, match="needs command"):
        mgr.plan("started", status)


def test_write_pidfile_atomic(tmp_path):
    path = tmp_path / "x.pid"
    s.write_pidfile_atomic(str(path), 4242)
    assert path.read_text() == "4242\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.pid"]


def test_run_check_mode_plans_and_touches_nothing(tmp_path, sleeper):
    (tmp_path / "web.pid").write_text("%d\n" % sleeper.pid)
    module = FakeModule(check_mode=True)
    module.params = pidfile_params(tmp_path, program=r"^sleep 300$", state="restarted")
    result = s.run(module)
    assert result["changed"] is True and result["old_pids"] == [sleeper.pid] == result["new_pids"]
    assert result["steps"][0].startswith("send SIGTERM to PID %d" % sleeper.pid)
    assert sleeper.poll() is None
    assert (tmp_path / "web.pid").read_text() == "%d\n" % sleeper.pid


def test_port_open_and_closed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    assert s.port_open("127.0.0.1", port)
    srv.close()
    assert not s.port_open("127.0.0.1", port)
