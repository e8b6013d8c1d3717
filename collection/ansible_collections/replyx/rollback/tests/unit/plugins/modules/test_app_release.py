# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""app_release through main() on a real git repository and a real process (the pidfile manager
running ``sleep``): query, prepared (fetch, kept checkout), running (checkout, restart, history),
idempotence, check mode, refusals, and a failed switch recorded as failed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess

import pytest

from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _release
from ansible_collections.replyx.rollback.plugins.modules import app_release


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd)] + list(args), check=True, capture_output=True, text=True,
                          env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A bare repository with releases v1 (requirements a), v2 (requirements a), v3 (requirements b)."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    for tag, req in (("v1", "a\n"), ("v2", "a\n"), ("v3", "b\n")):
        (src / "requirements.txt").write_text(req)
        (src / "VERSION").write_text(tag + "\n")
        git(src, "add", "-A")
        git(src, "commit", "-qm", tag)
        git(src, "tag", tag)
    bare = tmp_path / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True)
    return bare


@pytest.fixture
def app(tmp_path, repo):
    app_dir = tmp_path / "app dir é"
    subprocess.run(["git", "clone", "-q", str(repo), str(app_dir)], check=True)
    git(app_dir, "checkout", "-q", "v2")
    return app_dir


def run_module(monkeypatch, capsys, tmp_path, check_mode=False, **params):
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    from ansible.module_utils import _internal
    monkeypatch.setattr(_internal, "is_controller", False)
    args = dict(_ansible_check_mode=check_mode, _ansible_diff=False, _ansible_remote_tmp=str(tmp_path),
                _ansible_keep_remote_files=False)
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            app_release.main()
    result = json.loads(capsys.readouterr().out)
    result["_rc"] = exit_info.value.code
    return result


def service(tmp_path):
    return dict(name="app", manager="pidfile", pidfile=str(tmp_path / "app.pid"), program="^sleep 300",
                command=["sleep", "300"], wait_timeout=5)


@pytest.fixture
def stop_service(tmp_path):
    yield
    pidfile = tmp_path / "app.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
        except (OSError, ValueError):
            pass


def test_query_reports_the_running_release_and_history(monkeypatch, capsys, tmp_path, app):
    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"tag": "v1", "result": "success"}, {"tag": "v2", "result": "success"}]))
    result = run_module(monkeypatch, capsys, tmp_path, app="backend", app_dir=str(app), history=str(history),
                        state="query")
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["release"] == "v2" and result["commit"] == git(app, "rev-parse", "HEAD")
    assert [h["tag"] for h in result["history"]] == ["v1", "v2"]


@pytest.mark.parametrize("release, pushed, expected", [
    ("v1", False, {"release": "v1", "known": True, "where": "local"}),
    ("v4", True, {"release": "v4", "known": True, "where": "repository"}),
    ("v9.9.9", True, {"release": "v9.9.9", "known": False, "valid": ["v1", "v2", "v3", "v4"]}),
    ("v9.9.9", False, {"release": "v9.9.9", "known": False, "valid": ["v1", "v2", "v3"]}),
], ids=["in the working tree", "only in the repository", "unknown", "unknown, nothing new upstream"])
def test_query_checks_a_release_without_changing_anything(monkeypatch, capsys, tmp_path, app, repo, release, pushed,
                                                          expected):
    if pushed:
        src = tmp_path / "src"
        (src / "VERSION").write_text("v4\n")
        git(src, "commit", "-qam", "v4")
        git(src, "tag", "v4")
        git(src, "push", "-q", str(repo), "v4")
    refs_before = git(app, "show-ref")
    result = run_module(monkeypatch, capsys, tmp_path, app="backend", app_dir=str(app), state="query",
                        release=release, repo_url=str(repo))
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["checked_release"] == expected
    assert result["release"] == "v2" and git(app, "show-ref") == refs_before   # nothing fetched


def test_prepared_fetches_a_new_release_and_keeps_the_running_checkout(monkeypatch, capsys, tmp_path, app, repo):
    src = tmp_path / "src"
    (src / "VERSION").write_text("v4\n")
    git(src, "commit", "-qam", "v4")
    git(src, "tag", "v4")
    git(src, "push", "-q", str(repo), "v4")
    kept = tmp_path / "kept tree"
    params = dict(app="backend", app_dir=str(app), release="v4", repo_url=str(repo), keep_tree=str(kept),
                  dependency_files=["requirements.txt"], state="prepared")
    result = run_module(monkeypatch, capsys, tmp_path, **params)
    assert result["_rc"] == 0, result
    assert result["changed"] is True and result["dependencies_differ"] is True   # v4 carries v3's requirements
    assert (kept / "VERSION").read_text() == "v2\n"          # the running release, kept
    assert (app / "VERSION").read_text() == "v2\n"           # still serving v2
    assert git(app, "rev-parse", "v4^{commit}") == result["commit"]
    again = run_module(monkeypatch, capsys, tmp_path, **params)
    assert again["changed"] is False


def test_unknown_release_is_refused_listing_the_releases(monkeypatch, capsys, tmp_path, app, repo):
    result = run_module(monkeypatch, capsys, tmp_path, app="backend", app_dir=str(app), release="v9",
                        repo_url=str(repo), state="running", service=service(tmp_path))
    assert result["_rc"] == 1
    assert "unknown release 'v9'. Valid releases: v1, v2, v3" in result["msg"]
    assert (app / "VERSION").read_text() == "v2\n"


def test_running_switches_restarts_and_records(monkeypatch, capsys, tmp_path, app, stop_service):
    history = tmp_path / "history.json"
    params = dict(app="backend", app_dir=str(app), release="v1", history=str(history), history_result="rollback",
                  history_extra={"rolled_back_from": "v2", "run_id": "r1"}, dependency_files=["requirements.txt"],
                  install_command=["false"], service=service(tmp_path))
    planned = run_module(monkeypatch, capsys, tmp_path, check_mode=True, **params)
    assert planned["changed"] is True and planned["steps"][0].startswith("git checkout v1")
    assert (app / "VERSION").read_text() == "v2\n" and not history.exists()

    result = run_module(monkeypatch, capsys, tmp_path, **params)
    assert result["_rc"] == 0, result
    assert (app / "VERSION").read_text() == "v1\n"
    assert result["dependencies_differ"] is False        # same requirements: install_command (false) never ran
    assert result["service"]["new_pids"]
    entries = json.loads(history.read_text())
    assert entries[-1]["tag"] == "v1" and entries[-1]["result"] == "rollback"
    assert entries[-1]["rolled_back_from"] == "v2" and entries[-1]["run_id"] == "r1"

    again = run_module(monkeypatch, capsys, tmp_path, **params)
    assert again["changed"] is False and len(json.loads(history.read_text())) == 1


def test_a_switch_left_unfinished_is_finished_restarted_and_recorded(monkeypatch, capsys, tmp_path, app, stop_service):
    """A run interrupted between the checkout and the restart (or the record) leaves the tree at the target while
    the process still runs the release the history names last: 'already there' would keep that process."""
    history = tmp_path / "history.json"
    v2 = git(app, "rev-parse", "HEAD")
    history.write_text(json.dumps([{"tag": "v1", "commit": git(app, "rev-parse", "v1^{commit}"), "result": "success"},
                                   {"tag": "v2", "commit": v2, "result": "success"}]))
    git(app, "checkout", "-q", "v1")  # the interrupted run's checkout; no restart, no record
    params = dict(app="backend", app_dir=str(app), release="v1", history=str(history), history_result="rollback",
                  history_extra={"rolled_back_from": "v1", "run_id": "r2"}, dependency_files=["requirements.txt"],
                  service=service(tmp_path))
    result = run_module(monkeypatch, capsys, tmp_path, **params)
    assert result["_rc"] == 0, result
    assert result["unfinished_switch"] == {"tag": "v2", "commit": v2, "newest_result": "success"}
    assert result["steps"][0].startswith("finish the switch to v1 an earlier run left unfinished")
    assert result["changed"] is True and result["service"]["new_pids"]
    entries = json.loads(history.read_text())
    assert entries[-1]["tag"] == "v1" and entries[-1]["result"] == "rollback" and entries[-1]["previous_commit"] == v2
    assert entries[-1]["rolled_back_from"] == "v2"  # the release that ran, not the checkout the caller saw
    again = run_module(monkeypatch, capsys, tmp_path, **params)  # now recorded: already there
    assert again["changed"] is False and "unfinished_switch" not in again and len(json.loads(history.read_text())) == 3


@pytest.mark.parametrize("history, commit, release, expected", [
    ([], "c1", "v1", None),
    ([{"tag": "v1", "commit": "c1", "result": "success"}], "c1", "v1", None),
    ([{"tag": "v1", "result": "deploy"}], "c1", "v1", None),  # no commit recorded: the tag decides
    ([{"tag": "v1", "commit": "c1", "result": "rollback"}, {"tag": "v2", "commit": "c2", "result": "success"}],
     "c1", "v1", {"tag": "v2", "commit": "c2", "newest_result": "success"}),
    ([{"tag": "v2", "commit": "c2", "result": "success"}, {"tag": "v1", "commit": "c1", "result": "failed"}],
     "c1", "v1", {"tag": "v2", "commit": "c2", "newest_result": "failed"}),
    ([{"tag": "v2", "result": "success"}], "c1", "v1", {"tag": "v2", "commit": "", "newest_result": "success"}),
], ids=["empty history", "recorded", "recorded by tag", "another release ran last", "the switch failed",
        "no commits recorded"])
def test_unfinished_switch(history, commit, release, expected):
    assert _release.unfinished_switch(history, commit, release) == expected


def test_a_failed_dependency_install_is_recorded_as_failed(monkeypatch, capsys, tmp_path, app, stop_service):
    history = tmp_path / "history.json"
    result = run_module(monkeypatch, capsys, tmp_path, app="backend", app_dir=str(app), release="v3",
                        history=str(history), dependency_files=["requirements.txt"], install_command=["false"],
                        service=service(tmp_path))
    assert result["_rc"] == 1 and "Failed to install the dependencies of v3" in result["msg"]
    entries = json.loads(history.read_text())
    assert entries[-1]["tag"] == "v3" and entries[-1]["result"] == "failed"


def test_unknown_service_option_is_refused(monkeypatch, capsys, tmp_path, app):
    svc = dict(service(tmp_path), colour="red")
    result = run_module(monkeypatch, capsys, tmp_path, app="backend", app_dir=str(app), release="v1",
                        service=svc)
    assert result["_rc"] == 1 and "unknown service option(s) colour" in result["msg"]
    assert (app / "VERSION").read_text() == "v2\n"


def test_history_append_keeps_every_entry(tmp_path):
    path = str(tmp_path / "h.json")
    for i in range(5):
        _release.append_history(path, {"n": i})
    assert [e["n"] for e in _release.read_history(path)] == [0, 1, 2, 3, 4]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
