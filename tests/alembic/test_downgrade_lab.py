"""alembic_downgrade against a real PostgreSQL 18 + pgvector and the lab backend's own migrations.

Every test asserts on the database itself (alembic_version rows, information_schema, pg_indexes,
pg_extension), not only on what the module says.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import psycopg
import pytest

from tests.alembic.conftest import APP_PYTHON, APP_SRC, CHAIN, HEAD, finish_module, run_module, start_module, warnings_of

pytestmark = [pytest.mark.pg, pytest.mark.slow]

PERF_MIGRATION = next((APP_SRC / "alembic" / "versions").glob("165e5d314eaf_*.py"))
PERF_INDEXES = set(re.findall(r'^\s*\("((?:ix|idx)_[a-z0-9_]+)", "', PERF_MIGRATION.read_text(), re.M))
COSINE_INDEX = "knowledge_embeddings_embedding_cosine_idx"
D8E1_INDEXES = {"knowledge_embeddings_embedding_hot_cosine_idx", "ix_knowledge_embeddings_assistant_search"}
BASE_TABLES = {"users", "assistants", "dialogs", "dialog_messages", "knowledge_embeddings", "alembic_version"}


def assert_secret_free(app, *results):
    for result in results:
        assert app.server.password not in result["_raw"]


def schema(app) -> dict:
    return dict(tables=app.tables(), indexes=app.indexes(), constraints=app.constraints(),
                assistants=app.columns("assistants"), dialogs=app.columns("dialogs"),
                extensions=app.extensions(), versions=app.versions())


def test_perf_index_list_is_read():
    assert len(PERF_INDEXES) == 36


def test_step_by_step_to_baseline_and_back(app):
    head = schema(app)
    assert {"widget_version", "ai_model"} <= head["assistants"]
    assert PERF_INDEXES | D8E1_INDEXES | {COSINE_INDEX} <= head["indexes"]
    assert "vector" in head["extensions"]

    # 1. widget_version: a1b2c3d4e5f6 -> fb3228f45466 (drops assistants.widget_version)
    r1 = run_module(app.base_args(target="widget_version", allow_data_loss=True), diff=True)
    assert not r1["failed"], r1["msg"] if "msg" in r1 else r1
    assert r1["changed"] and (r1["before"], r1["after"]) == (HEAD, "fb3228f45466")
    assert [s["revision"] for s in r1["steps"]] == [HEAD]
    assert r1["diff"] == {"before": "revision: %s\n" % HEAD, "after": "revision: fb3228f45466\n"}
    assert r1["lock"]["acquired"] and r1["migration_connection"] == "passed connection"
    assert app.versions() == ["fb3228f45466"]
    assert "widget_version" not in app.columns("assistants")
    assert "ai_model" in app.columns("assistants")
    assert app.sql("SELECT name FROM assistants") == "bot"  # the row survived, only the column went

    # 2. pgvector_indexes: fb3228f45466 -> d8e1f2a3b4c5 -> c4132f66258f
    r2 = run_module(app.base_args(target="pgvector_indexes", allow_data_loss=True))
    assert r2["changed"] and [s["revision"] for s in r2["steps"]] == ["fb3228f45466", "d8e1f2a3b4c5"]
    assert r2["data_loss"] == {"steps": ["fb3228f45466"], "allowed_by": "allow_data_loss"}
    assert app.versions() == ["c4132f66258f"]
    assert not {"ai_model"} & app.columns("assistants")
    assert not {"handoff_status", "handoff_requested_at"} & app.columns("dialogs")
    assert "ck_dialogs_handoff_status" not in app.constraints()
    indexes = app.indexes()
    assert not (D8E1_INDEXES | {"ix_dialogs_handoff_requested"}) & indexes
    assert COSINE_INDEX in indexes  # c4132f66258f itself stays applied

    # 3. performance_indexes: c4132f66258f -> 165e5d314eaf (index only: no override needed, no warning)
    r3 = run_module(app.base_args(target="performance_indexes"))
    assert r3["changed"] and not r3["would_drop_data"] and warnings_of(r3) == []
    assert app.versions() == ["165e5d314eaf"]
    assert COSINE_INDEX not in app.indexes()
    assert "vector" in app.extensions()  # the extension stays, only the index goes
    assert PERF_INDEXES <= app.indexes()

    # 4. baseline: 165e5d314eaf -> 7b2e4d6f8a10 -> 3f9a1c2b7d45 -> 66ea5c9e3d91
    r4 = run_module(app.base_args(target="baseline", allow_data_loss=True))
    assert r4["changed"] and [s["revision"] for s in r4["steps"]] == ["165e5d314eaf", "7b2e4d6f8a10",
                                                                      "3f9a1c2b7d45"]
    assert app.versions() == ["66ea5c9e3d91"]
    assert not PERF_INDEXES & app.indexes()
    assert app.tables() == BASE_TABLES
    assert "vector" in app.extensions()

    # re-run at the target: nothing to do, nothing locked
    again = run_module(app.base_args(target="baseline"), diff=True)
    assert not again["failed"] and again["changed"] is False
    assert again["steps"] == [] and again["before"] == again["after"] == "66ea5c9e3d91"
    assert again["lock"] is None and len(again["commands"]) == 1
    assert app.versions() == ["66ea5c9e3d91"]

    # upgrade back to head with the app's own alembic
    proc = app.alembic("upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    assert app.versions() == [HEAD]
    back = schema(app)
    assert back["indexes"] == head["indexes"] and back["tables"] == head["tables"]
    assert back["assistants"] == head["assistants"]
    assert_secret_free(app, r1, r2, r3, r4, again)


def test_data_dropping_step_refused_without_manifest_then_allowed(app):
    refused = run_module(app.base_args(target="widget_version"))
    assert refused["failed"] and refused["changed"] is False
    assert refused["msg"].startswith("Failed to downgrade the database: a1b2c3d4e5f6 drops assistants.widget_version")
    assert "backup_manifest" in refused["msg"] and "allow_data_loss" in refused["msg"]
    assert app.versions() == [HEAD] and "widget_version" in app.columns("assistants")

    allowed = run_module(app.base_args(target="widget_version", allow_data_loss=True))
    assert allowed["changed"] and allowed["data_loss"]["allowed_by"] == "allow_data_loss"
    assert any("allow_data_loss=true" in w and "assistants.widget_version" in w for w in warnings_of(allowed))
    assert app.versions() == ["fb3228f45466"]
    assert_secret_free(app, refused, allowed)


def _backup_with_manifest(app, tmp_path, revision):
    from ansible_collections.replyx.rollback.plugins.module_utils._manifest import sha256_path, write_manifest

    dump = tmp_path / f"{app.dbname}.dump"
    subprocess.run([app.server.bin("pg_dump"), "-Fc", "-f", str(dump), "-d", app.url], check=True,
                   capture_output=True)
    manifest = write_manifest(str(dump), dict(name=dump.name, path=str(dump), kind="logical", format="custom",
                                              sha256=sha256_path(str(dump)), database=app.dbname,
                                              alembic_revision=revision, created="2026-01-01T00:00:00+00:00"))
    return dump, manifest


def test_verified_backup_manifest_allows_data_loss(app, tmp_path):
    _dump, manifest = _backup_with_manifest(app, tmp_path, HEAD)
    ok = run_module(app.base_args(target="widget_version", backup_manifest=manifest))
    assert not ok["failed"] and ok["changed"], ok.get("msg")
    assert ok["data_loss"]["allowed_by"] == "backup_manifest" and warnings_of(ok) == []
    assert ok["backup_manifest"]["path"] == manifest
    assert ok["backup_manifest"]["sha256"] and ok["backup_manifest"]["database"] == app.dbname
    assert app.versions() == ["fb3228f45466"]

    # the same manifest no longer matches: the database moved on from the revision it was taken at
    stale = run_module(app.base_args(target="pgvector_indexes", backup_manifest=manifest))
    assert stale["failed"] and stale["msg"].startswith("Failed to accept backup_manifest: ")
    assert "taken at revision a1b2c3d4e5f6, the database is at fb3228f45466" in stale["msg"]
    assert app.versions() == ["fb3228f45466"]

    # a backup altered after its manifest was written is refused
    (tmp_path / "second").mkdir()
    dump2, manifest2 = _backup_with_manifest(app, tmp_path / "second", "fb3228f45466")
    with open(dump2, "ab") as fh:
        fh.write(b"tampered")
    tampered = run_module(app.base_args(target="pgvector_indexes", backup_manifest=manifest2,
                                        allow_data_loss=True))
    assert tampered["failed"] and "checksum mismatch" in tampered["msg"]
    assert app.versions() == ["fb3228f45466"]
    assert_secret_free(app, ok, stale, tampered)


def test_check_mode_changes_nothing(app):
    before = schema(app)
    plan = run_module(app.base_args(target="baseline", sql_preview=True), check_mode=True, diff=True)
    assert not plan["failed"], plan.get("msg")
    assert plan["changed"] is True and plan["after"] == "66ea5c9e3d91"
    assert [s["revision"] for s in plan["steps"]] == CHAIN[:-1]
    assert plan["would_drop_data"] is True
    assert any("a real run would be refused" in w for w in warnings_of(plan))
    assert "DROP INDEX" in plan["sql"] and "knowledge_embeddings_embedding_cosine_idx" in plan["sql"]
    assert "UPDATE alembic_version SET version_num='66ea5c9e3d91'" in plan["sql"]
    assert plan["lock"] is None
    assert [json_action(c) for c in plan["commands"]] == ["state", "sql"]
    assert plan["diff"]["after"] == "revision: 66ea5c9e3d91\n"
    assert schema(app) == before
    assert_secret_free(app, plan)


def json_action(argv):
    return json.loads(argv[-1])["action"]


def test_relative_targets_and_base(app):
    one = run_module(app.base_args(target="-1", allow_data_loss=True))
    assert one["after"] == "fb3228f45466" and app.versions() == ["fb3228f45466"]
    two = run_module(app.base_args(target="-2", allow_data_loss=True))
    assert two["after"] == "c4132f66258f" and app.versions() == ["c4132f66258f"]
    prefix = run_module(app.base_args(target="165e"))
    assert prefix["target"] == "165e5d314eaf" and app.versions() == ["165e5d314eaf"]
    base = run_module(app.base_args(target="base", allow_data_loss=True))
    assert base["changed"] and base["after"] is None
    assert app.versions() == []
    assert app.tables() == {"alembic_version"}
    assert "vector" in app.extensions()
    assert app.alembic("upgrade", "head").returncode == 0 and app.versions() == [HEAD]


# ---- concurrency ---------------------------------------------------------------------------------

def _hold_table(app, table):
    """A session holding ACCESS SHARE on a table: a downgrade's ALTER blocks behind it (lock held)."""
    conn = psycopg.connect(app.url)
    conn.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
    return conn


def _wait_for_advisory_lock(app, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = app.sql("SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted")
        if pid:
            return int(pid.split()[0])
        time.sleep(0.2)
    raise AssertionError("no downgrade took the advisory lock")


def _wait_for_sessions(app, count, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(app.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = 'replyx.alembic_downgrade'")) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("the second downgrade never reached the database")


def test_second_downgrade_waits_then_finds_the_target_reached(app):
    blocker = _hold_table(app, "assistants")
    try:
        first = start_module(app.base_args(target="widget_version", allow_data_loss=True))
        holder_pid = _wait_for_advisory_lock(app)
        second = start_module(app.base_args(target="widget_version", allow_data_loss=True, lock_timeout=120))
        _wait_for_sessions(app, 3)  # first: lock + migration connection; second: its lock connection
        time.sleep(2.5)
        assert first.poll() is None and second.poll() is None  # both in flight, serialised by the lock
        assert app.versions() == [HEAD]
        assert holder_pid
    finally:
        blocker.rollback()
        blocker.close()
    r1, r2 = finish_module(first), finish_module(second)
    assert not r1["failed"] and not r2["failed"], (r1.get("msg"), r2.get("msg"))
    assert sorted([r1["changed"], r2["changed"]]) == [False, True]
    waited = r2 if not r2["changed"] else r1
    assert any("while waiting for the lock" in w for w in warnings_of(waited))
    assert waited["lock"]["waited_s"] > 1.5
    assert app.versions() == ["fb3228f45466"]
    assert "widget_version" not in app.columns("assistants") and "ai_model" in app.columns("assistants")


def test_second_downgrade_fails_cleanly_on_lock_timeout(app):
    blocker = _hold_table(app, "assistants")
    try:
        first = start_module(app.base_args(target="widget_version", allow_data_loss=True))
        holder_pid = _wait_for_advisory_lock(app)
        second = run_module(app.base_args(target="pgvector_indexes", allow_data_loss=True, lock_timeout=2))
        assert second["failed"] and second["changed"] is False
        assert second["msg"].startswith("Failed to acquire the advisory lock: advisory lock 1371980160693611854 "
                                        "is held by pid %d (application_name 'replyx.alembic_downgrade'"
                                        % holder_pid), second["msg"]
        assert "since" in second["msg"]
        assert second["lock"]["holders"][0]["pid"] == holder_pid
        assert app.versions() == [HEAD]
    finally:
        blocker.rollback()
        blocker.close()
    r1 = finish_module(first)
    assert not r1["failed"] and r1["changed"]
    assert app.versions() == ["fb3228f45466"]
    assert_secret_free(app, second, r1)


def test_two_simultaneous_downgrades_end_exactly_at_the_target(app):
    procs = [start_module(app.base_args(target="baseline", allow_data_loss=True)) for _i in range(2)]
    results = [finish_module(p) for p in procs]
    assert not any(r["failed"] for r in results), [r.get("msg") for r in results]
    assert sorted(r["changed"] for r in results) == [False, True]
    assert app.versions() == ["66ea5c9e3d91"]
    assert app.tables() == BASE_TABLES
    assert not PERF_INDEXES & app.indexes() and COSINE_INDEX not in app.indexes()
    assert "vector" in app.extensions()


# ---- bad input: clear error, nothing changed -----------------------------------------------------

def test_unknown_target(app):
    r = run_module(app.base_args(target="nope"))
    assert r["failed"] and r["msg"].startswith("Failed to resolve target nope: unknown revision (known revisions: ")
    for revision in CHAIN:
        assert revision in r["msg"]
    assert "widget_version=fb3228f45466" in r["msg"]
    assert app.versions() == [HEAD]


def test_descendant_target(app):
    assert run_module(app.base_args(target="performance_indexes", allow_data_loss=True))["changed"]
    r = run_module(app.base_args(target="widget_version"))
    assert r["failed"]
    assert "fb3228f45466 is a descendant of the current revision 165e5d314eaf" in r["msg"]
    assert app.versions() == ["165e5d314eaf"]


@pytest.mark.parametrize("url, fragment", [
    ("postgresql://postgres:pw@127.0.0.1:notaport/x", "Failed to parse database_url: malformed database_url: "
                                                       "the port is not a number"),
    ("mysql://postgres:pw@127.0.0.1/x", "Failed to parse database_url: malformed database_url: expected"),
    ("not a url", "Failed to parse database_url: malformed"),
])
def test_malformed_database_url(app, url, fragment):
    r = run_module(app.base_args(target="-1", database_url=url, allow_data_loss=True))
    assert r["failed"] and r["msg"].startswith(fragment), r["msg"]
    assert app.versions() == [HEAD]


def test_wrong_password(app):
    wrong = "wrong-pw-0xC0FFEE"
    r = run_module(app.base_args(target="-1", allow_data_loss=True,
                                 database_url=app.url.replace(app.server.password, wrong)))
    assert r["failed"] and r["msg"].startswith("Failed to connect to the database: ")
    assert "password authentication failed" in r["msg"]
    assert wrong not in r["_raw"] and app.server.password not in r["_raw"]
    assert app.versions() == [HEAD]


def test_project_dir_without_alembic_ini(app, tmp_path):
    r = run_module(app.base_args(target="-1", project_dir=str(tmp_path)))
    assert r["failed"] and r["msg"] == "Failed to find alembic.ini: %s/alembic.ini does not exist" % tmp_path


def test_interpreter_without_alembic(app):
    r = run_module(app.base_args(target="-1", python="/usr/bin/python3"))
    assert r["failed"]
    assert r["msg"].startswith("Failed to use the application's Python interpreter: ")
    assert "cannot import alembic" in r["msg"]
    assert app.versions() == [HEAD]


# ---- branches: a toy project with two heads on the same server -----------------------------------

BRANCH_ENV = '''
import os
from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
connectable = context.config.attributes.get("connection")
if connectable is None:
    with create_engine(url, poolclass=pool.NullPool).connect() as conn:
        context.configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable)
    with context.begin_transaction():
        context.run_migrations()
'''


@pytest.fixture
def branched(pg, tmp_path):
    """root -> a1 (label alpha) -> a2, and root -> b1 (label beta): two heads, both applied."""
    dbname = "branched_%d" % time.monotonic_ns()
    pg.psql(f"CREATE DATABASE {dbname}")
    project = tmp_path / "branched"
    (project / "migrations" / "versions").mkdir(parents=True)
    (project / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (project / "migrations" / "env.py").write_text(BRANCH_ENV)
    for rev, down, labels in (("root0000", None, None), ("a1000000", "root0000", ("alpha",)),
                              ("a2000000", "a1000000", None), ("b1000000", "root0000", ("beta",))):
        (project / "migrations" / "versions" / f"{rev}.py").write_text(
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = {labels!r}\ndepends_on = None\n"
            "downgrade_drops_data = []\n\nfrom alembic import op\n\n\n"
            f"def upgrade():\n    op.execute('CREATE TABLE t_{rev} (id int)')\n\n\n"
            f"def downgrade():\n    op.execute('DROP TABLE t_{rev}')\n")
    (project / ".env").write_text(f"DATABASE_URL={pg.dsn(dbname)}\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = pg.dsn(dbname)
    proc = subprocess.run([str(APP_PYTHON), "-m", "alembic", "-c", "alembic.ini", "upgrade", "heads"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    yield project, dbname
    pg.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def test_branches(pg, branched):
    project, dbname = branched

    def versions():
        return pg.psql("SELECT version_num FROM alembic_version ORDER BY 1", dbname=dbname).split()

    args = dict(project_dir=str(project), python=str(APP_PYTHON), lock_timeout=30)
    assert versions() == ["a2000000", "b1000000"]
    no_branch = run_module(dict(args, target="root0000"))
    assert no_branch["failed"] and "multiple heads" in no_branch["msg"] and "set branch" in no_branch["msg"]

    plan = run_module(dict(args, target="root0000", branch="alpha"), check_mode=True)
    assert [s["revision"] for s in plan["steps"]] == ["a2000000", "a1000000"]
    assert versions() == ["a2000000", "b1000000"]

    done = run_module(dict(args, target="root0000", branch="alpha"))
    assert not done["failed"], done.get("msg")
    assert done["changed"] and done["before"] == "a2000000" and done["current_heads"] == ["b1000000"]
    assert versions() == ["b1000000"]
    tables = set(pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", dbname=dbname).split())
    assert tables == {"alembic_version", "t_root0000", "t_b1000000"}
