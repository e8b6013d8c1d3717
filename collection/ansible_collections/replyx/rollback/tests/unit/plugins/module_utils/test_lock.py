# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lock state transitions (free, ours, held, stale, takeover, release) and the file backend."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import subprocess
import threading

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _lock as lk

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
HOST = "backend-1"


def holder(run_id="r-old", minutes_ago=5, host=HOST, pid=999, ttl_s=600, owner="bob", level="medium"):
    return dict(environment="prod", owner=owner, run_id=run_id, level=level,
                acquired_at=lk.iso(NOW - datetime.timedelta(minutes=minutes_ago)), host=host, pid=pid, ttl_s=ttl_s)


REQUEST = dict(run_id="r-new", ttl_s=600)


def never_alive(pid):
    return False


def always_alive(pid):
    return True


@pytest.mark.parametrize("current, takeover, alive, verdict", [
    (None, False, never_alive, "take"),
    (holder(run_id="r-new"), False, never_alive, "ours"),
    (holder(minutes_ago=5), True, always_alive, "refuse"),                # within ttl, holder runs: held
    (holder(minutes_ago=5), True, never_alive, "takeover"),               # a killed run: its PID is gone here
    (holder(minutes_ago=5), False, never_alive, "refuse"),                # ... taken over only when asked
    (holder(minutes_ago=5, host="elsewhere"), True, never_alive, "refuse"),  # PID elsewhere: cannot tell, ttl
    (holder(minutes_ago=20), False, never_alive, "refuse"),               # stale but not asked to take over
    (holder(minutes_ago=20), True, never_alive, "takeover"),              # stale and asked
    (holder(minutes_ago=20), True, always_alive, "refuse"),               # past ttl but holder PID still runs here
    (holder(minutes_ago=20, host="elsewhere"), True, always_alive, "takeover"),  # PID on another host: ttl decides
    (holder(minutes_ago=20, pid=None), True, always_alive, "takeover"),
])
def test_decide_acquire(current, takeover, alive, verdict):
    got, _why = lk.decide_acquire(current, REQUEST, NOW, HOST, takeover, check_pid=True, alive=alive)
    assert got == verdict


@pytest.mark.parametrize("current, request_pid, verdict", [
    (holder(run_id="r-new", pid=999), 999, "ours"),             # the same run again (its task retried)
    (holder(run_id="r-new", pid=999), 1234, "refuse"),          # same second, same run id, another process here
    (holder(run_id="r-new", pid=999), None, "ours"),            # this run's process unknown: the run id decides
    (holder(run_id="r-new", pid=None), 1234, "ours"),           # the holder's process unknown: the run id decides
    (holder(run_id="r-new", pid=999, host="elsewhere"), 1234, "ours"),  # another host's PID: cannot compare
])
def test_two_runs_with_one_run_id(current, request_pid, verdict):
    request = dict(REQUEST, pid=request_pid, host=HOST)
    got, why = lk.decide_acquire(current, request, NOW, HOST, True, alive=always_alive)
    assert got == verdict
    if verdict == "refuse":
        assert "same second" in why and "held by bob (run r-new" in why


def test_the_same_run_id_from_a_later_process_is_ours_once_the_first_is_gone():
    request = dict(REQUEST, pid=1234, host=HOST)
    assert lk.decide_acquire(holder(run_id="r-new", pid=999), request, NOW, HOST, False, alive=never_alive)[0] == "ours"


def test_refusal_names_the_holder():
    verdict, why = lk.decide_acquire(holder(), REQUEST, NOW, HOST, False, alive=always_alive)
    assert verdict == "refuse"
    assert why == ("held by bob (run r-old, level medium) since 2026-01-05T02:55:00Z (held for 5 min 0 s, within "
                   "its ttl of 600s; holder PID 999 on backend-1 is running)")


@pytest.mark.parametrize("record, alive, says", [
    (holder(minutes_ago=5), never_alive, "held for 5 min 0 s and holder PID 999 on backend-1 is gone); the lock is "
                                         "stale: set takeover_stale=true"),
    (holder(minutes_ago=5, host="elsewhere"), never_alive, "within its ttl of 600s; holder PID 999 on elsewhere "
                                                           "cannot be checked from backend-1)"),
    (holder(minutes_ago=5, pid=None), never_alive, "its holder process was not recorded)"),
    (holder(minutes_ago=125, ttl_s=36000), always_alive, "held for 2 h 5 min, within its ttl of 36000s"),
    (holder(minutes_ago=0), always_alive, "held for 0 s, within"),
])
def test_refusal_says_age_and_liveness(record, alive, says):
    verdict, why = lk.decide_acquire(record, REQUEST, NOW, HOST, False, alive=alive)
    assert verdict == "refuse" and says in why


def test_stale_refusal_says_how_to_take_over():
    _v, why = lk.decide_acquire(holder(minutes_ago=20), REQUEST, NOW, HOST, False, alive=never_alive)
    assert "stale" in why and "takeover_stale=true" in why and "PID 999 on backend-1 is gone" in why


def test_postgres_backend_ignores_pid():
    verdict, why = lk.decide_acquire(holder(minutes_ago=20), REQUEST, NOW, HOST, True, check_pid=False,
                                     alive=always_alive)
    assert verdict == "takeover" and "past its ttl of 600s" in why


def test_holder_ttl_wins_over_request_ttl():
    # The holder asked for 1 hour; our 10 minutes do not make its 20-minute-old lock stale.
    stale, _why = lk.is_stale(holder(minutes_ago=20, ttl_s=3600, host="elsewhere"), NOW, 600, HOST, alive=never_alive)
    assert stale is False


@pytest.mark.parametrize("current, run_id, force, verdict", [
    (None, "r1", False, "free"),
    (holder(run_id="r1"), "r1", False, "release"),
    (holder(run_id="r1"), "r2", False, "refuse"),
    (holder(run_id="r1"), "r2", True, "force"),
])
def test_decide_release(current, run_id, force, verdict):
    assert lk.decide_release(current, run_id, force)[0] == verdict


@pytest.mark.parametrize("pid, force, alive, verdict", [
    (999, False, always_alive, "release"),
    (1234, False, always_alive, "refuse"),   # a run refused at the lock (same run id) never frees the running one's
    (1234, True, always_alive, "release"),   # force: an operator's explicit release
    (1234, False, never_alive, "release"),   # the holder is gone: the run id decides
    (None, False, always_alive, "release"),
])
def test_release_by_another_process_with_the_same_run_id(pid, force, alive, verdict):
    got, why = lk.decide_release(holder(run_id="r1", pid=999), "r1", force, pid, HOST, alive=alive)
    assert got == verdict, why


def test_parse_iso_roundtrip():
    assert lk.parse_iso(lk.iso(NOW)) == NOW
    assert lk.parse_iso("2026-01-05T03:00:00.123456+00:00").microsecond == 123456
    with pytest.raises(ValueError):
        lk.parse_iso("yesterday")


# --- file backend -----------------------------------------------------------------------------------

def record(run_id, **kw):
    rec = dict(environment="prod", owner="alice", run_id=run_id, level="high", acquired_at=lk.iso(lk.utcnow()),
               host=HOST, pid=os.getpid(), ttl_s=600)
    rec.update(kw)
    return rec


def deciding(request, takeover=False):
    return lambda current: lk.decide_acquire(current, request, lk.utcnow(), HOST, takeover)


def test_file_acquire_conflict_reacquire_release(tmp_path):
    backend = lk.FileBackend(dict(path=str(tmp_path / "prod.json"), environment="prod"))
    mine = record("r1")
    assert backend.acquire(mine, deciding(mine))[0] == "take"
    assert json.loads((tmp_path / "prod.json").read_text())["run_id"] == "r1"
    assert backend.acquire(mine, deciding(mine))[0] == "ours"
    other = record("r2", owner="bob")
    verdict, why, current = backend.acquire(other, deciding(other))
    assert verdict == "refuse" and "held by alice (run r1, level high)" in why and current["run_id"] == "r1"
    assert backend.release("r2", lambda c: lk.decide_release(c, "r2", False))[0] == "refuse"
    assert (tmp_path / "prod.json").exists()
    assert backend.release("r1", lambda c: lk.decide_release(c, "r1", False))[0] == "release"
    assert not (tmp_path / "prod.json").exists()
    assert backend.release("r1", lambda c: lk.decide_release(c, "r1", False))[0] == "free"


def test_file_stale_takeover(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / "prod.json"
    old = record("r-old", owner="bob", pid=gone.pid, host=HOST, ttl_s=1,
                 acquired_at=lk.iso(lk.utcnow() - datetime.timedelta(seconds=30)))
    path.write_text(json.dumps(old))
    backend = lk.FileBackend(dict(path=str(path), environment="prod"))
    new = record("r-new")
    assert backend.acquire(new, deciding(new, takeover=False))[0] == "refuse"
    verdict, why, previous = backend.acquire(new, deciding(new, takeover=True))
    assert verdict == "takeover" and previous["run_id"] == "r-old" and "is gone" in why
    assert json.loads(path.read_text())["run_id"] == "r-new"


def test_file_only_one_of_many_concurrent_acquirers_wins(tmp_path):
    path = str(tmp_path / "prod.json")
    verdicts = []
    barrier = threading.Barrier(8)

    def contender(i):
        backend = lk.FileBackend(dict(path=path, environment="prod"))
        rec = record("r%d" % i)
        barrier.wait()
        verdicts.append(backend.acquire(rec, deciding(rec))[0])

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(verdicts) == ["refuse"] * 7 + ["take"]


def test_unreadable_lock_file_is_a_holder_not_free(tmp_path, monkeypatch):
    monkeypatch.setattr(lk.time, "sleep", lambda s: None)
    path = tmp_path / "prod.json"
    path.write_text("{garbage")
    current = lk.FileBackend(dict(path=str(path), environment="prod")).read()
    assert current["run_id"] == "unknown" and "unreadable" in current["owner"]


def test_holder_pid_default_finds_outermost_ansible(tmp_path):
    proc = tmp_path / "proc"

    def fake(pid, ppid, argv):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (proc / str(pid) / "stat").write_text("%d (x) S %d 0 0" % (pid, ppid))

    fake(10, 1, ["/usr/bin/python3", "/venv/bin/ansible-playbook", "site.yml"])
    fake(20, 10, ["/usr/bin/python3", "/venv/bin/ansible-playbook", "site.yml"])  # the per-task worker fork
    fake(30, 20, ["/bin/sh", "-c", "python3 module.py"])
    assert lk.holder_pid_default(start=30, proc=str(proc)) == 10
    fake(40, 1, ["/bin/bash"])
    assert lk.holder_pid_default(start=40, proc=str(proc)) is None
