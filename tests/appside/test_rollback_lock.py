"""rollback_lock for real with both backends: a lock file and a row in the application database."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from .conftest import pid_alive, run_module

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["file", "postgres"])
def backend(request, tmp_path):
    """Module options selecting one backend, plus a reader of the lock's stored state."""
    if request.param == "file":
        path = tmp_path / "lab.lock.json"

        def stored():
            return json.loads(path.read_text()) if path.exists() else None

        return dict(options={"backend": "file", "path": str(path)}, stored=stored, name="file")
    pg = request.getfixturevalue("pg")
    dbname = "lock_%s" % request.node.name.split("[")[0].replace("test_", "")[:40]
    pg.psql(f"DROP DATABASE IF EXISTS {dbname}")
    pg.psql(f"CREATE DATABASE {dbname}")

    def stored():
        exists = pg.psql("SELECT to_regclass('replyx_rollback_lock') IS NOT NULL", dbname=dbname)
        if exists != "t":
            return None
        row = pg.psql("SELECT json_build_object('owner', owner, 'run_id', run_id, 'level', level, 'pid', pid, "
                      "'host', host, 'ttl_s', ttl_s) FROM replyx_rollback_lock WHERE environment = 'lab'",
                      dbname=dbname)
        return json.loads(row) if row else None

    return dict(options={"backend": "postgres", "database_url": pg.dsn(dbname)}, stored=stored, name="postgres",
                table_exists=lambda: pg.psql("SELECT to_regclass('replyx_rollback_lock') IS NOT NULL",
                                             dbname=dbname) == "t", password=pg.password)


def lock(backend, check_mode=False, diff=False, **kw):
    args = dict(backend["options"], environment="lab")
    args.update(kw)
    return run_module("rollback_lock", args, check_mode=check_mode, diff=diff)


def test_acquire_conflict_idempotent_release(backend):
    planned = lock(backend, check_mode=True, run_id="run-1", owner="alice", level="high")
    assert not planned.get("failed"), planned.get("msg")
    assert planned["changed"] is True and backend["stored"]() is None
    if backend["name"] == "postgres":
        assert backend["table_exists"]() is False, "check mode must not create the table"

    first = lock(backend, run_id="run-1", owner="alice", level="high", diff=True)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True and first["lock"]["owner"] == "alice" and first["lock"]["level"] == "high"
    assert set(first["lock"]) >= {"environment", "owner", "run_id", "level", "acquired_at", "host", "pid"}
    assert backend["stored"]()["run_id"] == "run-1"

    second = lock(backend, run_id="run-2", owner="bob", level="critical")
    assert second["failed"] is True and second["changed"] is False
    assert second["msg"].startswith("Failed to acquire rollback lock lab: held by alice (run run-1, level high) since %s"
                                    " (held for " % first["lock"]["acquired_at"])
    assert backend["stored"]()["run_id"] == "run-1"

    again = lock(backend, run_id="run-1", owner="alice", level="high")
    assert not again.get("failed") and again["changed"] is False
    assert again["lock"]["acquired_at"] == first["lock"]["acquired_at"]

    wrong = lock(backend, state="released", run_id="run-2")
    assert wrong["failed"] is True and "held by alice (run run-1" in wrong["msg"]
    assert backend["stored"]()["run_id"] == "run-1"

    planned = lock(backend, state="released", run_id="run-1", check_mode=True)
    assert planned["changed"] is True and backend["stored"]()["run_id"] == "run-1"

    released = lock(backend, state="released", run_id="run-1")
    assert not released.get("failed") and released["changed"] is True and released["released"]["run_id"] == "run-1"
    assert backend["stored"]() is None

    free = lock(backend, state="released", run_id="run-1")
    assert not free.get("failed") and free["changed"] is False

    if backend["name"] == "postgres":
        assert backend["password"] not in first["_raw"] + second["_raw"]


def test_stale_takeover_only_when_asked(backend):
    # The holder: a process that is gone by now, with a 1 s ttl.
    holder = subprocess.Popen(["true"])
    holder.wait()
    first = lock(backend, run_id="run-old", owner="bob", level="medium", ttl_s=1, holder_pid=holder.pid)
    assert first["changed"] is True and first["lock"]["pid"] == holder.pid and not pid_alive(holder.pid)
    time.sleep(1.5)

    refused = lock(backend, run_id="run-new", owner="alice", level="critical")
    assert refused["failed"] is True
    assert refused["msg"].startswith("Failed to acquire rollback lock lab: held by bob (run run-old, level medium)")
    assert "stale" in refused["msg"] and "takeover_stale=true" in refused["msg"]
    assert backend["stored"]()["run_id"] == "run-old"

    planned = lock(backend, run_id="run-new", owner="alice", level="critical", takeover_stale=True, check_mode=True)
    assert planned["changed"] is True and backend["stored"]()["run_id"] == "run-old"

    taken = lock(backend, run_id="run-new", owner="alice", level="critical", takeover_stale=True)
    assert not taken.get("failed"), taken.get("msg")
    assert taken["changed"] is True and taken["took_over"]["run_id"] == "run-old"
    assert taken["took_over"]["owner"] == "bob" and taken["took_over"]["reason"]
    assert "took over stale rollback lock lab from held by bob" in taken["msg"]
    assert backend["stored"]()["run_id"] == "run-new"
    lock(backend, state="released", run_id="run-new")


def test_fresh_lock_is_not_taken_over(backend):
    # held by a process that still runs (this test), within its ttl
    lock(backend, run_id="run-1", owner="alice", level="high", ttl_s=3600, holder_pid=os.getpid())
    refused = lock(backend, run_id="run-2", owner="bob", takeover_stale=True)
    assert refused["failed"] is True and "stale" not in refused["msg"]
    assert backend["stored"]()["run_id"] == "run-1"
    forced = lock(backend, state="released", run_id="run-2", force=True)
    assert forced["changed"] is True and forced["released"]["run_id"] == "run-1" and backend["stored"]() is None


def test_file_holder_alive_past_ttl_is_not_stale(tmp_path, spawn):
    alive = spawn(["sleep", "300"])
    opts = {"backend": "file", "path": str(tmp_path / "lab.json"), "environment": "lab"}
    run_module("rollback_lock", dict(opts, run_id="run-1", owner="alice", ttl_s=1, holder_pid=alive.pid))
    time.sleep(1.5)
    refused = run_module("rollback_lock", dict(opts, run_id="run-2", takeover_stale=True))
    assert refused["failed"] is True and "stale" not in refused["msg"]
    assert alive.poll() is None


def test_default_holder_is_the_ansible_process(tmp_path):
    opts = {"backend": "file", "path": str(tmp_path / "lab.json"), "environment": "lab"}
    first = run_module("rollback_lock", dict(opts, run_id="run-1", ttl_s=1))
    pid = first["lock"]["pid"]
    assert pid and not pid_alive(pid), "the ad-hoc ansible process has exited"
    time.sleep(1.5)
    taken = run_module("rollback_lock", dict(opts, run_id="run-2", takeover_stale=True))
    assert taken["changed"] is True and taken["took_over"]["pid"] == pid and "is gone" in taken["took_over"]["reason"]


def test_postgres_wrong_password_fails_clearly(pg):
    result = run_module("rollback_lock", {"backend": "postgres", "environment": "lab", "run_id": "r",
                                          "login_port": pg.port, "login_password": "not-it-987"})
    assert result["failed"] is True
    assert result["msg"].startswith(f"Failed to connect to PostgreSQL postgres.replyx_rollback_lock@127.0.0.1:{pg.port}")
    assert "password authentication failed" in result["msg"] and "not-it-987" not in result["_raw"]


def test_postgres_concurrent_acquirers_one_wins(pg):
    pg.psql("DROP DATABASE IF EXISTS lock_race")
    pg.psql("CREATE DATABASE lock_race")
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i):
        return run_module("rollback_lock", {"backend": "postgres", "environment": "race", "run_id": f"run-{i}",
                                            "database_url": pg.dsn("lock_race")})

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(attempt, range(4)))
    winners = [r for r in results if not r.get("failed")]
    assert len(winners) == 1, [r.get("msg") for r in results]
    assert all("Failed to acquire rollback lock race: held by" in r["msg"] for r in results if r.get("failed"))
    assert pg.psql("SELECT run_id FROM replyx_rollback_lock", dbname="lock_race") == winners[0]["lock"]["run_id"]
