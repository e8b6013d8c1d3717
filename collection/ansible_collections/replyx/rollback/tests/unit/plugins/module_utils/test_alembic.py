# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planning of alembic_downgrade: target resolution, ancestry, steps, data-loss decision, helper I/O."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _alembic as al
from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure,
    ConnectionFailure,
    InputError,
    SafetyRefusal,
)


# The lab application's named targets (inventories/lab: rollback_named_targets).
NAMED = {"widget_version": "fb3228f45466", "pgvector_indexes": "c4132f66258f",
         "performance_indexes": "165e5d314eaf", "baseline": "66ea5c9e3d91"}


def rev(revision, down, message="", drops=None, labels=()):
    downs = [] if down is None else (list(down) if isinstance(down, tuple) else [down])
    return dict(revision=revision, down_revisions=downs, message=message, branch_labels=list(labels),
                drops_data=drops, drops_data_declared=drops is not None)


# The lab's history, newest first (as ScriptDirectory.walk_revisions yields it).
LAB = [
    rev("a1b2c3d4e5f6", "fb3228f45466", "widget version", ["assistants.widget_version"]),
    rev("fb3228f45466", "d8e1f2a3b4c5", "fb", []),
    rev("d8e1f2a3b4c5", "c4132f66258f", "d8", ["bot_instances"]),
    rev("c4132f66258f", "165e5d314eaf", "pgvector cosine index", []),
    rev("165e5d314eaf", "7b2e4d6f8a10", "performance indexes", []),
    rev("7b2e4d6f8a10", "3f9a1c2b7d45", "7b", None),  # does not declare: unknown -> dropping
    rev("3f9a1c2b7d45", "66ea5c9e3d91", "3f", []),
    rev("66ea5c9e3d91", None, "baseline", []),
]
HEAD = "a1b2c3d4e5f6"
ORDER = [r["revision"] for r in LAB]


@pytest.fixture
def lab():
    return al.History(LAB)


# ---- target resolution --------------------------------------------------------------------------

@pytest.mark.parametrize("target, current, expected", [
    ("fb3228f45466", HEAD, "fb3228f45466"),            # full id
    ("fb32", HEAD, "fb3228f45466"),                    # unique prefix
    ("c", HEAD, "c4132f66258f"),                       # one-letter prefix that is unique
    ("widget_version", HEAD, "fb3228f45466"),          # named targets from the plan
    ("pgvector_indexes", HEAD, "c4132f66258f"),
    ("performance_indexes", HEAD, "165e5d314eaf"),
    ("baseline", HEAD, "66ea5c9e3d91"),
    ("-1", HEAD, "fb3228f45466"),                      # relative
    ("-2", HEAD, "d8e1f2a3b4c5"),
    ("-7", HEAD, "66ea5c9e3d91"),
    ("-8", HEAD, None),                                # exactly to base
    ("-1", "66ea5c9e3d91", None),
    ("base", HEAD, None),
    (" base ", HEAD, None),
    ("head", HEAD, HEAD),
])
def test_resolve_target(lab, target, current, expected):
    assert al.resolve_target(lab, current, target, NAMED) == expected


@pytest.mark.parametrize("target, current, fragment", [
    ("deadbeef", HEAD, "unknown revision"),
    ("-9", HEAD, "only 8 revision(s) above base"),
    ("-1", None, "only 0 revision(s) above base"),
    ("-0", HEAD, "at least -1"),
    ("+1", HEAD, "upgrade, not a downgrade"),
    ("", HEAD, "unknown revision"),
])
def test_resolve_target_errors(lab, target, current, fragment):
    with pytest.raises(InputError) as err:
        al.resolve_target(lab, current, target, NAMED)
    assert fragment in err.value.msg
    assert err.value.msg.startswith("Failed to resolve target")


def test_unknown_target_lists_known_revisions_and_named_targets(lab):
    with pytest.raises(InputError) as err:
        al.resolve_target(lab, HEAD, "nope", NAMED)
    for revision in ORDER:
        assert revision in err.value.msg
    for name in NAMED:
        assert name in err.value.msg


def test_ambiguous_prefix():
    history = al.History([rev("abc1", "abc2"), rev("abc2", None)])
    with pytest.raises(InputError) as err:
        al.resolve_target(history, "abc1", "abc", {})
    assert "ambiguous" in err.value.msg and "abc1" in err.value.msg and "abc2" in err.value.msg


def test_named_target_pointing_nowhere(lab):
    with pytest.raises(InputError) as err:
        al.resolve_target(lab, HEAD, "gone", {"gone": "0000aaaa"})
    assert "named target gone points at 0000aaaa" in err.value.msg


def test_named_target_may_be_a_prefix_or_base(lab):
    assert al.resolve_target(lab, HEAD, "x", {"x": "fb32"}) == "fb3228f45466"
    assert al.resolve_target(lab, HEAD, "x", {"x": "base"}) is None


def test_named_target_wins_over_prefix():
    history = al.History([rev("baseline0001", None)])
    assert al.resolve_target(history, "baseline0001", "baseline", {"baseline": "baseline0001"}) == "baseline0001"


# ---- ancestry and steps -------------------------------------------------------------------------

def test_ancestors(lab):
    assert lab.ancestors(HEAD) == set(ORDER)
    assert lab.ancestors("165e5d314eaf") == set(ORDER[4:])
    assert lab.ancestors(None) == set()


@pytest.mark.parametrize("current, target, revisions", [
    (HEAD, "fb3228f45466", [HEAD]),
    ("fb3228f45466", "c4132f66258f", ["fb3228f45466", "d8e1f2a3b4c5"]),
    ("c4132f66258f", "165e5d314eaf", ["c4132f66258f"]),
    ("165e5d314eaf", "66ea5c9e3d91", ["165e5d314eaf", "7b2e4d6f8a10", "3f9a1c2b7d45"]),
    (HEAD, None, ORDER),
    (HEAD, HEAD, []),
    (None, None, []),
])
def test_plan_steps(lab, current, target, revisions):
    steps = al.plan_steps(lab, current, target)
    assert [s["revision"] for s in steps] == revisions
    for step in steps:
        downs = lab.downs(step["revision"])
        assert step["down_revision"] == (downs[0] if downs else None)


def test_step_carries_message_and_drops(lab):
    step = al.plan_steps(lab, HEAD, "fb3228f45466")[0]
    assert step == dict(revision=HEAD, down_revision="fb3228f45466", message="widget version",
                        drops_data=["assistants.widget_version"], additive=False)


def test_descendant_target_is_refused(lab):
    with pytest.raises(InputError) as err:
        al.plan_steps(lab, "c4132f66258f", HEAD)
    assert "is a descendant of the current revision c4132f66258f" in err.value.msg


def test_any_target_from_base_is_a_descendant(lab):
    with pytest.raises(InputError) as err:
        al.plan_steps(lab, None, "66ea5c9e3d91")
    assert "descendant" in err.value.msg and "base" in err.value.msg


BRANCHED = [
    rev("m1", ("a2", "b1"), "merge"),
    rev("a2", "a1", labels=("alpha",)),
    rev("b1", "root", labels=("beta",)),
    rev("a1", "root"),
    rev("root", None),
]


def test_not_an_ancestor_on_another_branch():
    history = al.History(BRANCHED)
    with pytest.raises(InputError) as err:
        al.plan_steps(history, "a2", "b1")
    assert "b1 is not an ancestor of the current revision a2" in err.value.msg


def test_steps_through_a_merge_come_newest_first():
    history = al.History(BRANCHED)
    steps = [s["revision"] for s in al.plan_steps(history, "m1", "root")]
    assert steps[0] == "m1" and steps[-1] in ("a1", "b1")
    assert steps.index("a2") < steps.index("a1")
    assert set(steps) == {"m1", "a2", "a1", "b1"}


def test_expected_after(lab):
    steps = al.plan_steps(lab, HEAD, "fb3228f45466")
    assert al.expected_after(lab, [HEAD], steps, "fb3228f45466") == ["fb3228f45466"]
    assert al.expected_after(lab, [HEAD], al.plan_steps(lab, HEAD, None), None) == []


# ---- current revision and branches --------------------------------------------------------------

def test_select_current_linear(lab):
    assert al.select_current(lab, [HEAD], [HEAD]) == HEAD
    assert al.select_current(lab, [], [HEAD]) is None


def test_select_current_unknown_revision_in_database(lab):
    with pytest.raises(InputError) as err:
        al.select_current(lab, ["ffffffffffff"], [HEAD])
    assert "not in the migration scripts" in err.value.msg


TWO_HEADS = [
    rev("a2", "a1", labels=("alpha",)),
    rev("b1", "root", labels=("beta",)),
    rev("a1", "root"),
    rev("root", None),
]


def test_multiple_heads_need_a_branch():
    history = al.History(TWO_HEADS)
    with pytest.raises(InputError) as err:
        al.select_current(history, ["a2", "b1"], ["a2", "b1"])
    assert "multiple heads" in err.value.msg and "set branch" in err.value.msg


@pytest.mark.parametrize("branch, expected", [("alpha", "a2"), ("beta", "b1"), ("a2", "a2"), ("b1", "b1")])
def test_branch_selects_the_current_revision(branch, expected):
    history = al.History(TWO_HEADS)
    assert al.select_current(history, ["a2", "b1"], ["a2", "b1"], branch) == expected


def test_branch_to_base_removes_the_other_branch_too():
    # alembic downgrade alpha@base also removes b1, which depends on root: the plan must say so
    history = al.History(TWO_HEADS)
    steps = [s["revision"] for s in al.plan_steps(history, "a2", None, ["a2", "b1"])]
    assert set(steps) == {"a2", "a1", "b1", "root"} and steps[-1] == "root"
    assert al.expected_after(history, ["a2", "b1"], al.plan_steps(history, "a2", None, ["a2", "b1"]), None) == []


def test_branch_to_root_keeps_the_other_branch():
    history = al.History(TWO_HEADS)
    steps = al.plan_steps(history, "a2", "root", ["a2", "b1"])
    assert [s["revision"] for s in steps] == ["a2", "a1"]
    assert al.expected_after(history, ["a2", "b1"], steps, "root") == ["b1"]


def test_branch_downgrade_keeps_the_other_head():
    history = al.History(TWO_HEADS)
    steps = al.plan_steps(history, "a2", "a1")
    assert al.expected_after(history, ["a2", "b1"], steps, "a1") == ["a1", "b1"]


# ---- data loss ----------------------------------------------------------------------------------

def test_dropping_steps_counts_undeclared_as_dropping(lab):
    steps = al.plan_steps(lab, "165e5d314eaf", "66ea5c9e3d91")
    assert [s["revision"] for s in al.dropping_steps(steps)] == ["7b2e4d6f8a10"]
    assert "unknown data" in al.describe_dropping(al.dropping_steps(steps))


@pytest.mark.parametrize("current, target, manifest, allow, allowed_by, dropping", [
    ("c4132f66258f", "165e5d314eaf", None, False, None, []),                      # safe step
    (HEAD, "fb3228f45466", None, False, False, [HEAD]),                           # refused
    (HEAD, "fb3228f45466", {"path": "m"}, False, "backup_manifest", [HEAD]),
    (HEAD, "fb3228f45466", None, True, "allow_data_loss", [HEAD]),
    (HEAD, "fb3228f45466", {"path": "m"}, True, "backup_manifest", [HEAD]),        # manifest preferred
    ("fb3228f45466", "c4132f66258f", None, False, False, ["d8e1f2a3b4c5"]),
])
def test_decide_data_loss(lab, current, target, manifest, allow, allowed_by, dropping):
    steps = al.plan_steps(lab, current, target)
    got_allowed, got_dropping = al.decide_data_loss(steps, manifest, allow)
    assert got_allowed == allowed_by
    assert [s["revision"] for s in got_dropping] == dropping


def test_check_manifest_accepts_matching():
    al.check_manifest({"database": "chatai", "alembic_revision": HEAD}, "chatai", HEAD)


@pytest.mark.parametrize("manifest, fragment", [
    ({"database": "other", "alembic_revision": HEAD}, "backup of database 'other', not 'chatai'"),
    ({"database": "chatai", "alembic_revision": "fb3228f45466"}, "taken at revision fb3228f45466"),
    ({"database": "chatai"}, "taken at revision unknown"),
])
def test_check_manifest_refuses(manifest, fragment):
    with pytest.raises(SafetyRefusal) as err:
        al.check_manifest(manifest, "chatai", HEAD)
    assert fragment in err.value.msg
    assert err.value.msg.startswith("Failed to accept backup_manifest")


# ---- inputs -------------------------------------------------------------------------------------

def test_read_env_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# comment\nexport DATABASE_URL='postgresql://u:p w@h:5/db'\nA=1 # trailing\nB=\"x=y\"\nbad\n")
    assert al.read_env_file(str(env)) == {"DATABASE_URL": "postgresql://u:p w@h:5/db", "A": "1", "B": "x=y"}


def test_resolve_database_url_order(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u:p@h/fromfile\n")
    params = dict(project_dir=str(tmp_path), database_url=None, env_file=None)
    assert al.resolve_database_url(dict(params, database_url="postgresql://x@h/opt")) == \
        ("postgresql://x@h/opt", "database_url")
    assert al.resolve_database_url(params, environ={}) == \
        ("postgresql://u:p@h/fromfile", str(tmp_path / ".env"))
    (tmp_path / ".env").unlink()
    assert al.resolve_database_url(params, environ={"DATABASE_URL": "postgresql://e@h/env"}) == \
        ("postgresql://e@h/env", "environment")
    with pytest.raises(InputError) as err:
        al.resolve_database_url(params, environ={})
    assert err.value.msg.startswith("Failed to find the database URL")


def test_resolve_python_and_config(tmp_path):
    with pytest.raises(InputError) as err:
        al.resolve_python(dict(python=None, virtualenv=str(tmp_path)))
    assert "bin/python does not exist" in err.value.msg
    with pytest.raises(InputError) as err:
        al.resolve_config(dict(project_dir=str(tmp_path), config=None))
    assert err.value.msg == "Failed to find alembic.ini: %s/alembic.ini does not exist" % tmp_path
    with pytest.raises(InputError):
        al.resolve_config(dict(project_dir=str(tmp_path / "missing"), config=None))


# ---- helper I/O ---------------------------------------------------------------------------------

SECRET_URL = "postgresql://app:s3cr3t-pw@127.0.0.1:5432/chatai"


def test_helper_argv_has_no_url():
    argv = al.helper_argv("/venv/bin/python", "/tmp/h.py", "downgrade",
                          dict(destination="fb3228f45466", lock_id=1, lock_timeout=5))
    assert argv[:2] == ["/venv/bin/python", "/tmp/h.py"]
    assert json.loads(argv[2]) == dict(action="downgrade", destination="fb3228f45466", lock_id=1, lock_timeout=5)
    assert "s3cr3t" not in " ".join(argv)
    env = al.helper_env(SECRET_URL)
    assert env[al.URL_ENV] == SECRET_URL and env["DATABASE_URL"] == SECRET_URL


def test_parse_helper_output_takes_the_marked_line():
    out = "noise\n%s{\"ok\": true, \"x\": 1}\nmore noise\n" % al.RESULT_MARK
    assert al.parse_helper_output(out) == {"ok": True, "x": 1}
    assert al.parse_helper_output("Traceback ...") is None
    assert al.parse_helper_output(al.RESULT_MARK + "{broken") is None


@pytest.mark.parametrize("kind, exc_class, prefix", [
    ("connection", ConnectionFailure, "Failed to connect to the database: "),
    ("missing", InputError, "Failed to use the application's Python interpreter: "),
    ("lock", SafetyRefusal, "Failed to acquire the advisory lock: "),
    ("migration", CommandFailure, "Failed to downgrade the database: "),
    ("whatever", CommandFailure, "Failed to run the alembic helper: "),
])
def test_helper_error_mapping(kind, exc_class, prefix):
    exc = al.helper_error(dict(ok=False, kind=kind, message="boom", details=dict(lock={"key": 1})))
    assert isinstance(exc, exc_class)
    assert exc.msg == prefix + "boom"
    assert exc.extra == {"lock": {"key": 1}}


def test_helper_source_compiles_and_matches_constants():
    compile(al.HELPER, "replyx_alembic_helper.py", "exec")
    assert al.RESULT_MARK in al.HELPER and al.URL_ENV in al.HELPER


def test_default_lock_id_is_derived_from_the_name():
    import hashlib
    derived = int.from_bytes(hashlib.sha256(b"replyx.alembic").digest()[:8], "big", signed=True)
    assert al.DEFAULT_LOCK_ID == derived
    assert -2 ** 63 <= al.DEFAULT_LOCK_ID < 2 ** 63


# ---- the helper program itself, on a toy alembic project (SQLite, no server needed) --------------

TOY_ENV = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                         poolclass=pool.NullPool).connect()
    context.configure(connection=connectable)
    with context.begin_transaction():
        context.run_migrations()
    print("env.py noise on stdout")
'''

TOY_REVISION = '''"""%(message)s"""
from alembic import op
import sqlalchemy as sa

revision = %(revision)r
down_revision = %(down)r
branch_labels = None
depends_on = None
%(drops)s

def upgrade():
    op.create_table(%(table)r, sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table(%(table)r)
'''


def _app_python_with_alembic():
    import subprocess
    import sys
    probe = subprocess.run([sys.executable, "-c", "import alembic, sqlalchemy"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the test interpreter has no alembic")
    return sys.executable


@pytest.fixture
def toy_project(tmp_path):
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (tmp_path / "migrations" / "env.py").write_text(TOY_ENV)
    (tmp_path / "migrations" / "script.py.mako").write_text("")
    revisions = [("r1", None, "first table", "downgrade_drops_data = ['one']"),
                 ("r2", "r1", "second table", "downgrade_drops_data = []"),
                 ("r3", "r2", "third table, drops undeclared", "")]
    for revision, down, message, drops in revisions:
        (versions / ("%s.py" % revision)).write_text(TOY_REVISION % dict(
            revision=revision, down=down, message=message, drops=drops, table="t_" + revision))
    return tmp_path


def _run_helper(python, project, action, url, **args):
    import subprocess
    helper = project / al.HELPER_NAME
    helper.write_text(al.HELPER)
    args.update(project_dir=str(project), config=str(project / "alembic.ini"), timeout=60)
    argv = al.helper_argv(python, str(helper), action, args)
    env = dict(os.environ, **al.helper_env(url))
    proc = subprocess.run(argv, cwd=str(project), env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    result = al.parse_helper_output(proc.stdout)
    assert result is not None, proc.stdout + proc.stderr
    return result


def test_helper_state_reads_history_and_current(toy_project):
    python = _app_python_with_alembic()
    url = "sqlite:///%s" % (toy_project / "app.db")
    state = _run_helper(python, toy_project, "state", url)
    assert state["ok"] is True and state["current"] == [] and state["heads"] == ["r3"]
    history = dict((r["revision"], r) for r in state["history"])
    assert [r["revision"] for r in state["history"]] == ["r3", "r2", "r1"]
    assert history["r1"]["drops_data"] == ["one"] and history["r1"]["down_revisions"] == []
    assert history["r2"]["drops_data"] == [] and history["r2"]["drops_data_declared"] is True
    assert history["r3"]["drops_data"] is None and history["r3"]["drops_data_declared"] is False
    assert history["r3"]["message"] == "third table, drops undeclared"
    # planning on the helper's real answer
    graph = al.History(state["history"])
    assert [s["revision"] for s in al.plan_steps(graph, "r3", al.resolve_target(graph, "r3", "-2"))] == ["r3", "r2"]


def test_helper_sql_is_offline(toy_project):
    python = _app_python_with_alembic()
    url = "sqlite:///%s" % (toy_project / "app.db")
    sql = _run_helper(python, toy_project, "sql", url, start="r3", destination="r1")
    assert sql["ok"] is True
    assert "DROP TABLE t_r3" in sql["sql"] and "DROP TABLE t_r2" in sql["sql"] and "t_r1" not in sql["sql"]
    assert "UPDATE alembic_version SET version_num='r1'" in sql["sql"]
    assert not (toy_project / "app.db").exists() or (toy_project / "app.db").stat().st_size == 0


def test_helper_reports_unreadable_scripts_and_bad_url(toy_project):
    python = _app_python_with_alembic()
    (toy_project / "migrations" / "versions" / "r3.py").write_text("import not_a_module_anywhere\nrevision = 'r3'\n")
    broken = _run_helper(python, toy_project, "state", "sqlite:///%s" % (toy_project / "app.db"))
    assert broken["ok"] is False and broken["kind"] == "scripts"
    assert "not_a_module_anywhere" in broken["message"]
    (toy_project / "migrations" / "versions" / "r3.py").unlink()
    bad = _run_helper(python, toy_project, "state", "postgresql://u:hunter2@127.0.0.1:1/db")
    assert bad["ok"] is False and bad["kind"] == "connection"
    assert "hunter2" not in json.dumps(bad)


# A manifest handed over by the caller (the backup verified on the PostgreSQL host, the downgrade run on a backend).
GOOD_DATA = {"path": "/srv/replyx/postgres/backups/chatai.dump", "sha256": "ab" * 32, "database": "chatai",
             "alembic_revision": HEAD, "verified": True}


def test_manifest_from_data_accepts_a_verified_manifest():
    manifest = al.manifest_from_data(GOOD_DATA)
    assert manifest == GOOD_DATA and manifest is not GOOD_DATA


@pytest.mark.parametrize("change, fragment", [
    ({"verified": False}, "was not verified"),
    ({"verified": "yes"}, "was not verified"),
    ({"verified": None}, "was not verified"),
    ({"sha256": ""}, "no sha256"),
    ({"database": None}, "no database"),
    ({"path": ""}, "no path"),
])
def test_manifest_from_data_refuses(change, fragment):
    with pytest.raises(al.SafetyRefusal) as exc:
        al.manifest_from_data(dict(GOOD_DATA, **change))
    assert fragment in exc.value.msg
    assert exc.value.msg.startswith("Failed to accept backup_manifest_data")
