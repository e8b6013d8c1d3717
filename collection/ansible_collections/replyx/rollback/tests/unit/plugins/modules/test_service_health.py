# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""service_health through main(): argument spec, fail_json shape, no_log masking, changed=false."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _health
from ansible_collections.replyx.rollback.plugins.modules import service_health


def run_module(monkeypatch, capsys, tmp_path, check_mode=False, **params):
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    args = dict(_ansible_check_mode=check_mode, _ansible_remote_tmp=str(tmp_path), _ansible_keep_remote_files=False)
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            service_health.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result["_rc"] = exit_info.value.code
    result["_raw"] = out
    return result


def test_healthy_set_passes_unchanged_in_check_mode(monkeypatch, capsys, tmp_path):
    result = run_module(monkeypatch, capsys, tmp_path, check_mode=True,
                        checks=[dict(name="disk", type="disk", path=str(tmp_path), max_percent=100)])
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["summary"]["healthy"] is True and result["attempts"] == 1
    assert result["checklist"][0]["name"] == "disk" and result["checklist"][0]["ok"] is True


def test_failing_required_check_fails_with_threshold_in_msg(monkeypatch, capsys, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("ERROR boom\n")
    result = run_module(monkeypatch, capsys, tmp_path,
                        checks=[dict(name="backend log", type="log", path=str(log), minutes=0),
                                dict(name="optional disk", type="disk", path=str(tmp_path), max_percent=0,
                                     required=False)])
    assert result["_rc"] == 1 and result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("Failed to validate service health: 1 of 1 required checks failed: backend log")
    assert result["summary"]["failed_checks"] == ["backend log", "optional disk"]
    assert result["summary"]["failed_required"] == ["backend log"]
    assert "backend log: 1 error lines in the whole file > 0" in result["summary"]["crossed"]


def test_unknown_check_type_lists_choices(monkeypatch, capsys, tmp_path):
    result = run_module(monkeypatch, capsys, tmp_path, checks=[dict(name="x", type="ping")])
    assert result["_rc"] == 1
    assert "http, login, postgres, process, log, disk, memory" in result["msg"]


def test_bad_input_fails_before_running(monkeypatch, capsys, tmp_path):
    result = run_module(monkeypatch, capsys, tmp_path, checks=[dict(name="api", type="http")])
    assert result["_rc"] == 1 and result["msg"] == "Failed to validate checks: check api (type http) needs url"


def test_login_password_and_token_never_returned(monkeypatch, capsys, tmp_path):
    token = "tok-abcdef-123456"

    def fake_request(url, method="GET", headers=None, data=None, timeout=10, validate_certs=True):
        if url.endswith("/login"):
            return 200, json.dumps(dict(access_token=token)), 5.0
        assert headers["Authorization"] == "Bearer " + token
        return 200, json.dumps(dict(echo=headers["Authorization"])), 7.0

    monkeypatch.setattr(_health, "http_request", fake_request)
    result = run_module(monkeypatch, capsys, tmp_path, checks=[
        dict(name="login", type="login", url="http://api/login", email="ops@example.com", password="hunter2-pw"),
        dict(name="profile", type="http", url="http://api/profile", use_token=True,
             json_equals={"echo": "Bearer " + token})])
    assert result["_rc"] == 0, result["_raw"]
    assert [c["ok"] for c in result["checklist"]] == [True, True]
    assert "hunter2-pw" not in result["_raw"] and token not in result["_raw"]


def test_authorization_header_is_sent_and_masked(monkeypatch, capsys, tmp_path):
    seen = []

    def fake_request(url, method="GET", headers=None, data=None, timeout=10, validate_certs=True):
        seen.append(dict(headers))
        return 200, "{}", 3.0

    monkeypatch.setattr(_health, "http_request", fake_request)
    result = run_module(monkeypatch, capsys, tmp_path, checks=[
        dict(name="api", type="http", url="http://api/x", authorization="Bearer static-secret-42",
             headers={"X-Probe": "rollback"})])
    assert result["_rc"] == 0
    assert seen == [{"X-Probe": "rollback", "Authorization": "Bearer static-secret-42"}]
    assert "static-secret-42" not in result["_raw"]


def test_headers_and_bodies_are_never_echoed(monkeypatch, capsys, tmp_path):
    """The options that can carry secrets (headers, body, json) are sent but never in the result or its
    invocation (a -v run prints module_args)."""
    seen = []

    def fake_request(url, method="GET", headers=None, data=None, timeout=10, validate_certs=True):
        seen.append((dict(headers), data))
        return 200, "{}", 3.0

    monkeypatch.setattr(_health, "http_request", fake_request)
    result = run_module(monkeypatch, capsys, tmp_path, checks=[
        dict(name="key", type="http", url="http://api/x", headers={"X-Api-Key": "hdr-secret-913"}),
        dict(name="form", type="http", url="http://api/y", method="POST", body="token=body-secret-714"),
        dict(name="doc", type="http", url="http://api/z", method="POST", json={"password": "json-secret-385"})])
    assert result["_rc"] == 0, result["_raw"]
    assert seen[0][0]["X-Api-Key"] == "hdr-secret-913"
    assert seen[1][1] == b"token=body-secret-714" and b"json-secret-385" in seen[2][1]
    for secret in ("hdr-secret-913", "body-secret-714", "json-secret-385"):
        assert secret not in result["_raw"]
