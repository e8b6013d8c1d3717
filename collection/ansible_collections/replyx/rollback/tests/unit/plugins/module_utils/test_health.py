# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Threshold arithmetic and judging of the service_health engine, without any network."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _health as h
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError

UTC = datetime.timezone.utc


@pytest.mark.parametrize("values, pct, expected", [
    ([100], 95, 100.0),
    ([1, 2, 3, 4, 5], 50, 3.0),
    ([1, 2, 3, 4, 5], 95, 4.8),          # numpy linear: 4 + 0.8 * (5 - 4)
    ([5, 1, 4, 2, 3], 95, 4.8),          # order does not matter
    (list(range(1, 101)), 95, 95.05),
    ([10, 20], 0, 10.0),
    ([10, 20], 100, 20.0),
    ([], 95, None),
])
def test_percentile(values, pct, expected):
    got = h.percentile(values, pct)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize("errors, total, expected", [(0, 0, 0.0), (0, 20, 0.0), (1, 100, 1.0), (1, 20, 5.0), (3, 3, 100.0)])
def test_error_rate(errors, total, expected):
    assert h.error_rate(errors, total) == pytest.approx(expected)


def test_latency_within_limits_crosses_nothing():
    assert h.judge_latency("dialogs", 1999.9, 2000) == []
    assert h.judge_latency("dialogs", 2000, 2000) == []  # inclusive limit


def test_latency_over_absolute_limit_is_named():
    assert h.judge_latency("dialogs", 2612, 2000) == ["dialogs: p95 2612 ms > 2000 ms"]


def test_latency_ratio_to_baseline():
    # baseline 500 ms x 3.0 = 1500 ms: 1600 ms is degraded although under the absolute 2000 ms.
    assert h.baseline_limit(500, 3.0) == 1500.0
    crossed = h.judge_latency("dialogs", 1600, 2000, baseline_ms=500, ratio=3.0)
    assert crossed == ["dialogs: p95 1600 ms > 3x baseline 500 ms (1500 ms)"]
    assert h.judge_latency("dialogs", 1500, 2000, baseline_ms=500, ratio=3.0) == []


def test_both_thresholds_crossed():
    crossed = h.judge_latency("api", 2500.5, 2000, baseline_ms=100, ratio=3)
    assert crossed == ["api: p95 2500.5 ms > 2000 ms", "api: p95 2500.5 ms > 3x baseline 100 ms (300 ms)"]


def sample(ms, status=200, error=None):
    return dict(ms=ms, status=status, error=error)


def test_judge_samples_healthy():
    check = dict(name="health", type="http", required=True)
    entry = h._judge_samples(check, {}, [sample(10), sample(20), sample(30)])
    assert entry["ok"] is True
    assert entry["samples"]["count"] == 3 and entry["samples"]["error_rate"] == 0.0
    assert entry["samples"]["p95_ms"] == pytest.approx(29.0)
    assert entry["threshold"] == dict(max_p95_ms=2000.0, max_error_rate=1.0)


def test_judge_samples_error_rate_over_one_percent():
    check = dict(name="api", type="http", required=True)
    results = [sample(10)] * 49 + [sample(None, None, "Failed to reach x: refused")]
    entry = h._judge_samples(check, {}, results)
    assert entry["ok"] is False
    assert entry["crossed"] == ["api: error rate 2% > 1% (1 of 50 samples failed)"]
    assert "refused" in entry["detail"]


def test_judge_samples_error_rate_within_custom_limit():
    check = dict(name="api", type="http", required=True, max_error_rate=5.0)
    results = [sample(10)] * 49 + [sample(12, 500, "status 500, expected 200")]
    entry = h._judge_samples(check, {}, results)
    assert entry["ok"] is True
    assert "1 of 50 samples failed" in entry["detail"]


def test_judge_samples_baseline_ratio_reported():
    check = dict(name="dialogs", type="http", required=True)
    ctx = dict(baseline=dict(dialogs=100.0), max_ratio_to_baseline=3.0)
    entry = h._judge_samples(check, ctx, [sample(400)] * 5)
    assert entry["ok"] is False
    assert entry["samples"]["ratio_to_baseline"] == 4.0
    assert entry["threshold"]["max_p95_from_baseline_ms"] == 300.0
    assert "3x baseline 100 ms" in entry["detail"]


@pytest.mark.parametrize("count, kwargs, ok", [
    (1, {}, True), (0, {}, False), (3, dict(min_count=4), False), (4, dict(min_count=4), True),
    (19, dict(expected=20), True),            # 95% of 20 = exactly the limit
    (18, dict(expected=20), False),           # 90% < 95%
    (10, dict(expected=20, min_percent=50), True),
])
def test_judge_count(count, kwargs, ok):
    got_ok, threshold, crossed = h.judge_count("workers", count, **kwargs)
    assert got_ok is ok
    assert bool(crossed) is (not ok)
    if "expected" in kwargs:
        assert threshold["expected"] == kwargs["expected"]


def test_judge_count_message():
    _ok, _t, crossed = h.judge_count("bot workers", 18, expected=20)
    assert crossed == ["bot workers: 18 of 20 expected processes (90%) < 95%"]


@pytest.mark.parametrize("line, expected", [
    ("2026-01-05T03:12:44Z ERROR x", datetime.datetime(2026, 1, 5, 3, 12, 44, tzinfo=UTC)),
    ("2026-01-05 03:12:44,123 ERROR x", None),  # naive: local time, checked below
    ("2026-01-05T03:12:44.5+02:00 x", datetime.datetime(2026, 1, 5, 1, 12, 44, 500000, tzinfo=UTC)),
    ("[2026-01-05T03:12:44-0130] x", datetime.datetime(2026, 1, 5, 4, 42, 44, tzinfo=UTC)),
    ("Traceback (most recent call last):", None),
])
def test_parse_line_time(line, expected):
    got = h.parse_line_time(line)
    if expected is None and "2026" in line:
        local = datetime.datetime(2026, 1, 5, 3, 12, 44, 123000).astimezone()
        assert got == local.astimezone(UTC)
    else:
        assert got == expected


def test_scan_log_window_and_continuation_lines():
    lines = [
        "2026-01-05T03:00:00Z ERROR old failure",
        "2026-01-05T03:09:00Z INFO started",
        "2026-01-05T03:10:30Z ERROR dialogs failed",
        "Traceback (most recent call last):",
        "  File x, line 1",
        "2026-01-05T03:11:00Z INFO ok",
        "2026-01-05T03:11:30Z CRITICAL db down",
    ]
    since = datetime.datetime(2026, 1, 5, 3, 5, tzinfo=UTC)
    matches, in_window = h.scan_log(lines, ["ERROR", "CRITICAL", "Traceback"], since)
    assert matches == [lines[2], lines[3], lines[6]]
    assert in_window == 6
    # Without a window everything counts.
    matches, _n = h.scan_log(lines, ["ERROR"], None)
    assert len(matches) == 2


def test_scan_log_skips_unstamped_lines_before_the_first_stamp():
    since = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    matches, _n = h.scan_log(["ERROR no stamp", "2026-01-05T00:00:00Z fine"], ["ERROR"], since)
    assert matches == []


def test_check_log_counts_in_window(tmp_path):
    log = tmp_path / "app.log"
    now = datetime.datetime(2026, 1, 5, 3, 15, tzinfo=UTC)
    log.write_text("2026-01-05T02:00:00Z ERROR before window\n2026-01-05T03:14:00Z ERROR in window\n")
    entry = h.check_log(dict(name="log", type="log", path=str(log), minutes=10, required=True), dict(now=now))
    assert entry["ok"] is False and entry["value"] == 1
    assert entry["crossed"] == ["log: 1 error lines in the last 10 minutes > 0"]
    entry = h.check_log(dict(name="log", type="log", path=str(log), minutes=10, max_matches=1, required=True),
                        dict(now=now))
    assert entry["ok"] is True


def test_check_log_since_narrows_the_window_to_after_the_restart(tmp_path):
    log = tmp_path / "app.log"
    now = datetime.datetime(2026, 1, 5, 3, 15, tzinfo=UTC)
    log.write_text("2026-01-05T03:10:00Z ERROR during the incident\n2026-01-05T03:13:30Z INFO restarted\n"
                   "2026-01-05T03:14:00Z INFO GET /health 200\n")
    base = dict(name="log", type="log", path=str(log), minutes=10, required=True)
    assert h.check_log(dict(base), dict(now=now))["value"] == 1
    entry = h.check_log(dict(base, since="2026-01-05T03:13:00Z"), dict(now=now))
    assert entry["ok"] is True and entry["value"] == 0 and entry["lines_scanned"] == 2
    assert entry["threshold"]["since"] == "2026-01-05T03:13:00Z"
    late = log.read_text() + "2026-01-05T03:14:30Z ERROR after the restart\n"
    log.write_text(late)
    entry = h.check_log(dict(base, since="2026-01-05T03:13:00Z"), dict(now=now))
    assert entry["ok"] is False and entry["crossed"] == ["log: 1 error lines since 2026-01-05T03:13:00Z > 0"]
    bad = h.check_log(dict(base, since="yesterday"), dict(now=now))
    assert bad["ok"] is False and "not an ISO-8601 timestamp" in bad["detail"]


def test_check_log_missing_file(tmp_path):
    entry = h.check_log(dict(name="log", type="log", path=str(tmp_path / "nope.log"), required=True), {})
    assert entry["ok"] is False and "Failed to read log" in entry["detail"]


def test_memory_used_percent():
    text = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n"
    assert h.memory_used_percent(text) == pytest.approx(75.0)
    with pytest.raises(ValueError):
        h.memory_used_percent("MemTotal: 1000 kB\n")


def test_memory_check_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000 kB\nMemAvailable: 100 kB\n")
    entry = h.check_memory(dict(name="mem", type="memory", required=True), dict(meminfo=str(meminfo)))
    assert entry["ok"] is False and entry["value"] == 90.0
    assert entry["crossed"] == ["mem: memory usage 90% > 80%"]


def test_disk_check_against_limit(tmp_path):
    used = h.disk_used_percent(str(tmp_path))
    assert 0 <= used <= 100
    assert h.check_disk(dict(name="d", type="disk", path=str(tmp_path), max_percent=100, required=True), {})["ok"]
    entry = h.check_disk(dict(name="d", type="disk", path=str(tmp_path / "missing"), required=True), {})
    assert entry["ok"] is False and "Failed to stat" in entry["detail"]


def test_dotted_get():
    doc = dict(status="ok", data=dict(items=[dict(id=7)]))
    assert h.dotted_get(doc, "status") == "ok"
    assert h.dotted_get(doc, "data.items.0.id") == 7
    with pytest.raises(KeyError):
        h.dotted_get(doc, "data.items.3.id")
    with pytest.raises(KeyError):
        h.dotted_get(doc, "data.missing")


@pytest.mark.parametrize("check, status, body, problem", [
    (dict(), 200, "", None),
    (dict(status=[200, 204]), 204, "", None),
    (dict(), 503, "", "status 503, expected 200"),
    (dict(body_regex="healthy"), 200, "all healthy", None),
    (dict(body_regex="healthy"), 200, "degraded", "body does not match healthy"),
    (dict(json_equals={"status": "ok"}), 200, '{"status": "ok"}', None),
    (dict(json_equals={"db.up": True}), 200, '{"db": {"up": false}}', "JSON db.up is false, expected true"),
    (dict(json_equals={"count": "3"}), 200, '{"count": 3}', None),
    (dict(json_equals={"status": "ok"}), 200, "not json", "body is not JSON"),
])
def test_judge_response(check, status, body, problem):
    assert h._judge_response(check, status, body) == problem


def test_validate_checks_refuses_bad_input():
    with pytest.raises(InputError, match="no checks given: a health verdict needs at least one check"):
        h.validate_checks([])
    with pytest.raises(InputError, match="used twice"):
        h.validate_checks([dict(name="a", type="disk"), dict(name="a", type="memory")])
    with pytest.raises(InputError, match="needs url"):
        h.validate_checks([dict(name="a", type="http")])
    with pytest.raises(InputError, match="needs email or username"):
        h.validate_checks([dict(name="a", type="login", url="http://x", password="p")])
    with pytest.raises(InputError, match="pattern or pm2_app"):
        h.validate_checks([dict(name="a", type="process")])
    with pytest.raises(InputError, match="not a valid regular expression"):
        h.validate_checks([dict(name="a", type="process", pattern="(")])


def test_use_token_without_login_fails_the_check():
    entry = h.check_http(dict(name="me", type="http", url="http://127.0.0.1:1/", use_token=True, required=True),
                         dict(tokens={}, last_login=None))
    assert entry["ok"] is False and "no token" in entry["detail"]


def test_summary_and_message():
    checklist = [
        dict(name="a", ok=True, required=True, crossed=[], detail="fine"),
        dict(name="b", ok=False, required=True, crossed=["b: p95 3000 ms > 2000 ms"], detail="p95 3000 ms > 2000 ms"),
        dict(name="c", ok=False, required=False, crossed=[], detail="optional"),
    ]
    summary = h.summarize(checklist)
    assert summary == dict(passed=1, failed=2, total=3, healthy=False, failed_checks=["b", "c"],
                           failed_required=["b"], crossed=["b: p95 3000 ms > 2000 ms"])
    msg = h.failure_message(summary, checklist)
    assert msg == "Failed to validate service health: 1 of 2 required checks failed: b (p95 3000 ms > 2000 ms)"
    assert h.summarize(checklist[:1] + checklist[2:])["healthy"] is True


class FakeClock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def flaky(healthy_after):
    calls = []

    def runner(check, ctx):
        calls.append(1)
        return dict(name=check["name"], type="disk", ok=len(calls) > healthy_after, required=True, crossed=[],
                    detail="")
    return runner, calls


def test_retries_until_healthy(monkeypatch):
    runner, calls = flaky(2)
    monkeypatch.setitem(h.RUNNERS, "disk", runner)
    clock = FakeClock()
    _cl, summary, timing = h.validate_until_healthy([dict(name="d", type="disk")], {}, retries=5, delay=2,
                                                    sleep=clock.sleep, clock=clock)
    assert summary["healthy"] and timing["attempts"] == 3 and len(calls) == 3
    assert clock.now == 4


def test_retries_exhausted(monkeypatch):
    runner, calls = flaky(99)
    monkeypatch.setitem(h.RUNNERS, "disk", runner)
    clock = FakeClock()
    _cl, summary, timing = h.validate_until_healthy([dict(name="d", type="disk")], {}, retries=2, delay=1,
                                                    sleep=clock.sleep, clock=clock)
    assert not summary["healthy"] and timing["attempts"] == 3


def test_deadline_bounds_attempts(monkeypatch):
    runner, calls = flaky(99)
    monkeypatch.setitem(h.RUNNERS, "disk", runner)
    clock = FakeClock()
    _cl, summary, timing = h.validate_until_healthy([dict(name="d", type="disk")], {}, deadline_s=10, delay=3,
                                                    sleep=clock.sleep, clock=clock)
    # attempts at t=0, 3, 6 (6 + 3 < 10), then 9 + 3 > 10 stops
    assert timing["attempts"] == 4 and not summary["healthy"]


def test_a_crashing_check_is_a_failed_check(monkeypatch):
    def boom(check, ctx):
        raise RuntimeError("kaputt")
    monkeypatch.setitem(h.RUNNERS, "disk", boom)
    checklist = h.run_checks([dict(name="d", type="disk", required=True)], {})
    assert checklist[0]["ok"] is False and "kaputt" in checklist[0]["detail"]


def test_process_pattern_excludes_own_lineage():
    marker = "replyx-unit-marker-%d" % os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        # the child shows its own command line only once it has exec'ed: wait for that (a busy machine is slow)
        deadline = time.monotonic() + 10
        pids = h.matching_pids(marker)
        while not pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = h.matching_pids(marker)
        assert pids == [child.pid]
        # This test process itself has the marker nowhere in its command line; our lineage is excluded.
        assert os.getpid() not in h.matching_pids("python")
    finally:
        child.kill()
        child.wait()
    assert h.matching_pids(marker) == []


def test_parse_pm2_jlist_and_online_pids():
    out = ">>>> In-memory PM2 is out-of-date\n" + \
        '[{"name":"bots","pid":11,"pm2_env":{"status":"online"}},{"name":"bots","pid":0,"pm2_env":{"status":"stopped"}},' \
        '{"name":"api","pid":12,"pm2_env":{"status":"online"}}]'
    apps = h.parse_pm2_jlist(out)
    assert h.pm2_online_pids(apps, "bots") == [11]
    assert h.pm2_online_pids(apps, "nope") == []


def test_merged_pg_params_check_keys_win():
    merged = h.merged_pg_params(dict(login_port=6543, login_db=None), dict(login_host="db", login_port=5432))
    assert merged["login_host"] == "db" and merged["login_port"] == 6543 and merged["login_db"] == "postgres"
