# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rollback_lock through main() with the file backend: messages, idempotence, check mode, diff."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.modules import rollback_lock


def run_module(monkeypatch, capsys, tmp_path, check_mode=False, diff=False, **params):
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    args = dict(_ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_remote_tmp=str(tmp_path),
                _ansible_keep_remote_files=False, environment="prod", path=str(tmp_path / "prod.json"))
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            rollback_lock.main()
    result = json.loads(capsys.readouterr().out)
    result["_rc"] = exit_info.value.code
    return result


def test_lifecycle(monkeypatch, capsys, tmp_path):
    lock_file = tmp_path / "prod.json"
    r = run_module(monkeypatch, capsys, tmp_path, check_mode=True, run_id="r1", owner="alice", level="high")
    assert r["_rc"] == 0 and r["changed"] is True and not lock_file.exists()

    r = run_module(monkeypatch, capsys, tmp_path, diff=True, run_id="r1", owner="alice", level="high")
    assert r["_rc"] == 0 and r["changed"] is True
    assert r["lock"]["owner"] == "alice" and r["lock"]["run_id"] == "r1" and r["lock"]["level"] == "high"
    assert json.loads(r["diff"]["after"])["run_id"] == "r1"
    assert json.loads(lock_file.read_text())["run_id"] == "r1"

    r = run_module(monkeypatch, capsys, tmp_path, run_id="r1", owner="alice", level="high")
    assert r["_rc"] == 0 and r["changed"] is False

    r = run_module(monkeypatch, capsys, tmp_path, run_id="r2", owner="bob", level="critical")
    assert r["_rc"] == 1 and r["changed"] is False
    assert r["msg"].startswith("Failed to acquire rollback lock prod: held by alice (run r1, level high) since %s (held "
                               "for " % r["holder"]["acquired_at"])
    assert r["holder_age_s"] >= 0 and r["holder_alive"] in (True, None)

    r = run_module(monkeypatch, capsys, tmp_path, state="released", run_id="r2")
    assert r["_rc"] == 1 and "release it with that run_id or force=true" in r["msg"] and lock_file.exists()

    r = run_module(monkeypatch, capsys, tmp_path, state="released", run_id="r1", check_mode=True)
    assert r["_rc"] == 0 and r["changed"] is True and lock_file.exists()

    r = run_module(monkeypatch, capsys, tmp_path, state="released", run_id="r1")
    assert r["_rc"] == 0 and r["changed"] is True and r["released"]["run_id"] == "r1" and not lock_file.exists()

    r = run_module(monkeypatch, capsys, tmp_path, state="released", run_id="r1")
    assert r["_rc"] == 0 and r["changed"] is False


def test_force_release(monkeypatch, capsys, tmp_path):
    run_module(monkeypatch, capsys, tmp_path, run_id="r1")
    r = run_module(monkeypatch, capsys, tmp_path, state="released", run_id="r9", force=True)
    assert r["_rc"] == 0 and r["changed"] is True and r["released"]["run_id"] == "r1"


def test_missing_directory_is_a_clear_error(monkeypatch, capsys, tmp_path):
    r = run_module(monkeypatch, capsys, tmp_path, run_id="r1", path=str(tmp_path / "nope" / "prod.json"))
    assert r["_rc"] == 1 and r["msg"].startswith("Failed to create rollback lock file: directory")


@pytest.mark.parametrize("environment", ["../../etc/x", "prod/../x", "a b", "lab;reboot", "..", "lab\n"])
def test_an_environment_that_is_not_a_name_is_refused(monkeypatch, capsys, tmp_path, environment):
    r = run_module(monkeypatch, capsys, tmp_path, run_id="r1", environment=environment, path=None)
    assert r["_rc"] == 1 and "is not a name (letters, digits" in r["msg"], r["msg"]
    assert list(tmp_path.iterdir()) == [] or all(p.name.startswith("ansible") for p in tmp_path.iterdir())
