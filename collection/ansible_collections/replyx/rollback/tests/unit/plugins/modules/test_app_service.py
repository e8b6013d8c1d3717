# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""app_service through main(): manager choices, check mode, systemctl argv via run_command."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import subprocess

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.modules import app_service


def run_module(monkeypatch, capsys, tmp_path, check_mode=False, diff=False, **params):
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    args = dict(_ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_remote_tmp=str(tmp_path),
                _ansible_keep_remote_files=False)
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            app_service.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result["_rc"] = exit_info.value.code
    return result


def test_unknown_manager_lists_choices(monkeypatch, capsys, tmp_path):
    result = run_module(monkeypatch, capsys, tmp_path, name="api", manager="supervisor")
    assert result["_rc"] == 1
    assert "manager" in result["msg"] and "systemd, pm2, pidfile" in result["msg"]


def test_pidfile_manager_requires_pidfile(monkeypatch, capsys, tmp_path):
    result = run_module(monkeypatch, capsys, tmp_path, name="api", manager="pidfile", program="x")
    assert result["_rc"] == 1 and "pidfile" in result["msg"]


class FakeSystemctl(object):
    def __init__(self, active):
        self.active = active
        self.calls = []

    def answer(self, module, argv, **kwargs):
        self.calls.append(list(argv))
        verb = argv[1]
        if verb == "is-active":
            return (0, "active\n", "") if self.active else (3, "inactive\n", "")
        if verb == "show":
            return 0, "4242\n" if self.active else "0\n", ""
        if verb in ("restart", "start"):
            self.active = True
        if verb == "stop":
            self.active = False
        return 0, "", ""


@pytest.fixture
def systemctl(monkeypatch):
    fake = FakeSystemctl(active=True)

    def run_command(module, argv, **kwargs):  # a plain function, so that it binds as a method
        return fake.answer(module, argv, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False, opt_dirs=None: "/bin/" + name)
    return fake


def test_systemd_restart_runs_systemctl_restart(monkeypatch, capsys, tmp_path, systemctl):
    result = run_module(monkeypatch, capsys, tmp_path, name="chatai-backend", manager="systemd", state="restarted",
                        diff=True)
    assert result["_rc"] == 0 and result["changed"] is True
    assert ["/bin/systemctl", "restart", "chatai-backend"] in systemctl.calls
    assert result["commands"] == [["/bin/systemctl", "restart", "chatai-backend"]]
    assert result["old_pids"] == [4242] and result["diff"]["after"]["running"] is True


def test_systemd_started_when_running_is_unchanged(monkeypatch, capsys, tmp_path, systemctl):
    result = run_module(monkeypatch, capsys, tmp_path, name="chatai-backend", manager="systemd", state="started")
    assert result["_rc"] == 0 and result["changed"] is False and result["commands"] == []
    assert all(c[1] in ("is-active", "show") for c in systemctl.calls)


def test_systemd_check_mode_runs_nothing(monkeypatch, capsys, tmp_path, systemctl):
    result = run_module(monkeypatch, capsys, tmp_path, check_mode=True, name="chatai-backend", manager="systemd",
                        state="stopped")
    assert result["_rc"] == 0 and result["changed"] is True
    assert result["commands"] == [["/bin/systemctl", "stop", "chatai-backend"]]
    assert all(c[1] in ("is-active", "show") for c in systemctl.calls)


def test_pidfile_stale_check_mode_reports_and_spares(monkeypatch, capsys, tmp_path):
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        pidfile = tmp_path / "web.pid"
        pidfile.write_text("%d\n" % sleeper.pid)
        result = run_module(monkeypatch, capsys, tmp_path, check_mode=True, name="web", manager="pidfile",
                            pidfile=str(pidfile), program=r"http\.server", command=["python3", "-m", "http.server"],
                            state="restarted")
        assert result["_rc"] == 0
        assert result["stale_pidfile"]["pid"] == sleeper.pid
        assert result["old_pids"] == [] and "not signalled" in result["steps"][0]
        assert sleeper.poll() is None and pidfile.read_text() == "%d\n" % sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def test_environment_values_are_never_echoed(monkeypatch, capsys, tmp_path, systemctl):
    result = run_module(monkeypatch, capsys, tmp_path, name="chatai-backend", manager="systemd", state="started",
                        environment={"SECRET_KEY": "env-secret-5521"})
    assert result["_rc"] == 0
    assert "env-secret-5521" not in json.dumps(result)
    assert result["invocation"]["module_args"]["environment"] != {"SECRET_KEY": "env-secret-5521"}
