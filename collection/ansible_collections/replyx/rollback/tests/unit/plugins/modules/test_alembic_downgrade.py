# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""alembic_downgrade end to end through main(), with the helper's answers faked at run_command.

The real AnsibleModule prints the (no_log-masked) result; the tests parse that output, so what is
asserted about secrets is what Ansible would really return.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import sys

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _alembic as al
from ansible_collections.replyx.rollback.plugins.modules import alembic_downgrade

PASSWORD = "s3cr3t-unit-pw"
URL = "postgresql://chatai:%s@127.0.0.1:5432/chatai" % PASSWORD
HEAD = "a1b2c3d4e5f6"


def rev(revision, down, message, drops):
    return dict(revision=revision, down_revisions=[down] if down else [], message=message, branch_labels=[],
                drops_data=drops, drops_data_declared=drops is not None)


HISTORY = [
    rev("a1b2c3d4e5f6", "fb3228f45466", "widget version", ["assistants.widget_version"]),
    rev("fb3228f45466", "d8e1f2a3b4c5", "fb", []),
    rev("d8e1f2a3b4c5", "c4132f66258f", "d8", ["bot_instances"]),
    rev("c4132f66258f", "165e5d314eaf", "pgvector cosine index", []),
    rev("165e5d314eaf", "7b2e4d6f8a10", "performance indexes", []),
    rev("7b2e4d6f8a10", "3f9a1c2b7d45", "7b", []),
    rev("3f9a1c2b7d45", "66ea5c9e3d91", "3f", []),
    rev("66ea5c9e3d91", None, "baseline", []),
]


class FakeHelper(object):
    """Answers run_command like the helper would; records argv and environment of every call."""

    def __init__(self, current=HEAD, fail=None):
        self.current = [current] if current else []
        self.fail = fail or {}
        self.calls = []

    def __call__(self, args, cwd=None, environ_update=None, **_kwargs):
        payload = json.loads(args[2])
        action = payload["action"]
        self.calls.append(dict(argv=list(args), env=dict(environ_update or {}), cwd=cwd, action=action,
                               payload=payload))
        if action in self.fail:
            out = dict(ok=False, kind=self.fail[action][0], message=self.fail[action][1], details={})
        elif action == "state":
            out = dict(ok=True, current=list(self.current), heads=[HEAD], history=copy.deepcopy(HISTORY),
                       alembic_version="1.20.1", python=args[0])
        elif action == "sql":
            out = dict(ok=True, sql="-- Running downgrade %s\nALTER TABLE assistants DROP COLUMN widget_version;\n"
                       % payload["start"])
        elif action == "downgrade":
            self.current = list(payload["expected_after"])
            out = dict(ok=True, already=False, before=payload["expected_current"], after=self.current,
                       lock=dict(key=payload["lock_id"], acquired=True, waited_s=0.0, backend_pid=4242),
                       migration_connection="passed connection")
        else:  # pragma: no cover
            raise AssertionError(action)
        return (0 if out["ok"] else 1), "log line\n%s%s\n" % (al.RESULT_MARK, json.dumps(out)), "INFO [alembic]\n"

    def actions(self):
        return [c["action"] for c in self.calls]


@pytest.fixture
def project(tmp_path):
    app = tmp_path / "backend"
    app.mkdir()
    (app / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n")
    (app / ".env").write_text("DATABASE_URL=%s\nSECRET_KEY=x\n" % URL)
    return app


def warnings_of(result):
    """Warning texts (ansible-core 2.19 returns them as structured summaries)."""
    texts = []
    for warning in result.get("warnings") or []:
        texts.append(warning["event"]["msg"] if isinstance(warning, dict) else warning)
    return [t for t in texts if "remote_tmp" not in t]


def run_module(monkeypatch, capsys, tmp_path, fake, check_mode=False, diff=False, manifest=None, **params):
    (tmp_path / "remote").mkdir(exist_ok=True)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    # the module runs as on a target host, even when controller code (an action plugin test) was imported
    from ansible.module_utils import _internal
    monkeypatch.setattr(_internal, "is_controller", False)
    # the application's named targets (the inventory's rollback_named_targets)
    params.setdefault("named_targets", {"widget_version": "fb3228f45466", "pgvector_indexes": "c4132f66258f",
                                        "performance_indexes": "165e5d314eaf", "baseline": "66ea5c9e3d91"})
    args = dict(project_dir=str(params.pop("project_dir")), python=sys.executable,
                _ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_remote_tmp=str(tmp_path / "remote"),
                _ansible_keep_remote_files=False)
    args.update(params)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, *a, **kw: fake(*a, **kw))
    if manifest is not None:
        monkeypatch.setattr(al, "_verify_manifest", lambda path: dict(manifest, verified=True))
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            alembic_downgrade.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result["_rc"] = exit_info.value.code
    result["_raw"] = out
    return result


def test_downgrade_one_step(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="widget_version",
                        allow_data_loss=True, diff=True)
    assert result["_rc"] == 0, result
    assert result["changed"] is True
    assert (result["before"], result["after"], result["target"]) == (HEAD, "fb3228f45466", "fb3228f45466")
    assert [s["revision"] for s in result["steps"]] == [HEAD]
    assert result["steps"][0]["drops_data"] == ["assistants.widget_version"]
    assert result["diff"] == {"before": "revision: %s\n" % HEAD, "after": "revision: fb3228f45466\n"}
    assert result["lock"]["acquired"] is True and result["lock"]["key"] == al.DEFAULT_LOCK_ID
    assert result["data_loss"] == {"steps": [HEAD], "allowed_by": "allow_data_loss"}
    assert any("allow_data_loss=true" in w and "assistants.widget_version" in w for w in warnings_of(result))
    assert fake.actions() == ["state", "downgrade"]
    down = fake.calls[1]["payload"]
    assert down["destination"] == "fb3228f45466"
    assert down["expected_current"] == [HEAD] and down["expected_after"] == ["fb3228f45466"]
    assert down["lock_timeout"] == 60
    assert result["database_url_source"] == str(project / ".env")
    assert "duration_s" in result


def test_password_never_in_argv_or_result(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="-1",
                        allow_data_loss=True, sql_preview=True)
    assert result["_rc"] == 0
    for call in fake.calls:
        assert PASSWORD not in json.dumps(call["argv"])
        assert call["env"][al.URL_ENV] == URL  # the URL travels in the environment only
        assert call["cwd"] == str(project)
    assert PASSWORD not in result["_raw"]
    assert result["commands"] == [c["argv"] for c in fake.calls]
    assert result["commands"][0][0] == sys.executable
    assert result["commands"][0][1].endswith(al.HELPER_NAME)


def test_password_from_option_masked_in_failure(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper(fail={"state": ("connection", "password authentication failed for user \"chatai\" (%s)"
                                      % URL)})
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="-1",
                        database_url=URL.replace("/chatai", "/other"))
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to connect to the database: password authentication failed")
    assert PASSWORD not in result["_raw"]
    assert result["changed"] is False


def test_check_mode_plans_and_changes_nothing(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, check_mode=True, diff=True, project_dir=project,
                        target="pgvector_indexes", sql_preview=True)
    assert result["_rc"] == 0
    assert fake.actions() == ["state", "sql"]  # no downgrade call
    assert result["changed"] is True and result["after"] == "c4132f66258f"
    assert [s["revision"] for s in result["steps"]] == [HEAD, "fb3228f45466", "d8e1f2a3b4c5"]
    assert result["would_drop_data"] is True
    assert result["data_loss"] == {"steps": [HEAD, "d8e1f2a3b4c5"], "allowed_by": None}
    assert any("a real run would be refused" in w for w in warnings_of(result))
    assert "ALTER TABLE assistants DROP COLUMN widget_version" in result["sql"]
    assert fake.calls[1]["payload"]["start"] == HEAD
    assert fake.calls[1]["payload"]["destination"] == "c4132f66258f"
    assert result["lock"] is None


def test_check_mode_with_a_planned_backup_reports_the_refusal_without_warning(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, check_mode=True, project_dir=project,
                        target="fb3228f45466", backup_planned=True)
    assert result["_rc"] == 0 and result["would_drop_data"] is True
    assert result["refused_without_backup"].startswith("Failed to downgrade the database: a1b2c3d4e5f6 drops assistants.widget_version")
    assert not any("refused" in w for w in warnings_of(result))
    assert fake.actions() == ["state"]


def test_a_planned_backup_does_not_replace_the_manifest_in_a_real_run(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="fb3228f45466",
                        backup_planned=True)
    assert result["failed"] is True and "give backup_manifest" in result["msg"]
    assert "downgrade" not in fake.actions()


def test_refused_without_manifest(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="fb3228f45466")
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to downgrade the database: a1b2c3d4e5f6 drops assistants.widget_version")
    assert "backup_manifest" in result["msg"]
    assert fake.actions() == ["state"]


def test_safe_steps_need_no_manifest(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper(current="c4132f66258f")
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="performance_indexes")
    assert result["_rc"] == 0 and result["changed"] is True
    assert result["would_drop_data"] is False
    assert warnings_of(result) == []
    assert result["data_loss"] == {"steps": [], "allowed_by": None}


def test_accepted_with_matching_manifest(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    manifest = dict(database="chatai", alembic_revision=HEAD, sha256="ab" * 32, created="2026-01-01T00:00:00Z")
    result = run_module(monkeypatch, capsys, tmp_path, fake, manifest=manifest, project_dir=project,
                        target="widget_version", backup_manifest=str(tmp_path / "b.manifest.json"))
    assert result["_rc"] == 0 and result["changed"] is True
    assert result["backup_manifest"]["sha256"] == "ab" * 32
    assert result["backup_manifest"]["path"] == str(tmp_path / "b.manifest.json")
    assert result["data_loss"]["allowed_by"] == "backup_manifest"


@pytest.mark.parametrize("manifest, fragment", [
    (dict(database="other", alembic_revision=HEAD, sha256="x"), "backup of database 'other'"),
    (dict(database="chatai", alembic_revision="fb3228f45466", sha256="x"), "taken at revision fb3228f45466"),
])
def test_refused_with_mismatched_manifest(monkeypatch, capsys, tmp_path, project, manifest, fragment):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, manifest=manifest, project_dir=project,
                        target="widget_version", backup_manifest=str(tmp_path / "b.manifest.json"),
                        allow_data_loss=True)
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to accept backup_manifest: ")
    assert fragment in result["msg"]
    assert fake.actions() == ["state"]


def test_already_at_target(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper(current="fb3228f45466")
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="widget_version", diff=True)
    assert result["_rc"] == 0
    assert result["changed"] is False
    assert result["steps"] == [] and result["before"] == result["after"] == "fb3228f45466"
    assert result["diff"]["before"] == result["diff"]["after"]
    assert fake.actions() == ["state"]  # no lock, no write


@pytest.mark.parametrize("params, fragment", [
    (dict(target="zzzz"), "Failed to resolve target zzzz: unknown revision (known revisions: a1b2c3d4e5f6"),
    (dict(target="base", database_url="mysql://u:p@h/db"), "Failed to parse database_url: malformed"),
    (dict(target="base", database_url="postgresql://u:p@h:notaport/db"), "the port is not a number"),
    (dict(target="base", python="/nonexistent/python"), "Failed to find the application's Python interpreter"),
])
def test_bad_input(monkeypatch, capsys, tmp_path, project, params, fragment):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, **params)
    assert result["failed"] is True, result
    assert fragment in result["msg"]
    assert "downgrade" not in fake.actions()


def test_descendant_target(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper(current="165e5d314eaf")
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="widget_version")
    assert result["failed"] is True
    assert "fb3228f45466 is a descendant of the current revision 165e5d314eaf" in result["msg"]


def test_project_dir_without_alembic_ini(monkeypatch, capsys, tmp_path):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=tmp_path, target="base")
    assert result["failed"] is True
    assert result["msg"] == "Failed to find alembic.ini: %s/alembic.ini does not exist" % tmp_path
    assert fake.calls == []


def test_lock_refusal_is_reported(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper(fail={"downgrade": ("lock", "advisory lock 1 is held by pid 77 (application_name "
                                                  "'replyx.alembic_downgrade', user postgres, since x); waited 1s")})
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="-1",
                        allow_data_loss=True, lock_timeout=1)
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to acquire the advisory lock: advisory lock 1 is held by pid 77")
    assert result["changed"] is False


def test_virtualenv_and_python_are_exclusive(monkeypatch, capsys, tmp_path, project):
    fake = FakeHelper()
    result = run_module(monkeypatch, capsys, tmp_path, fake, project_dir=project, target="-1",
                        virtualenv=str(tmp_path))
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
