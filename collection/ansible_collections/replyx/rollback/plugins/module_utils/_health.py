# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The validation engine behind replyx.rollback.service_health.

Each check type is one function taking the check's options and a shared context and returning a
checklist entry: name, type, ok, required, value, threshold, detail, crossed (the thresholds it
crossed, as sentences) and type-specific extras (latency samples, table counts, matched lines).

Thresholds default to the plan's ROLLBACK_MONITORING. Limits are inclusive: a ``max_*`` value may be
reached but not exceeded, a ``min_*`` value must be reached. Nothing here changes anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import time

from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import open_url

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ConnectionFailure, InputError
from ansible_collections.replyx.rollback.plugins.module_utils._service import proc_cmdline
from ansible_collections.replyx.rollback.plugins.module_utils._pg import (
    connection_settings,
    pg_common_argument_spec,
    psycopg_kwargs,
)

try:
    import psycopg
    from psycopg import sql as pg_sql
    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover - depends on the managed host
    psycopg = None
    pg_sql = None
    HAS_PSYCOPG = False

CHECK_TYPES = ("http", "login", "postgres", "process", "log", "disk", "memory")

# The plan's ROLLBACK_MONITORING, as numbers.
DEFAULTS = dict(
    max_p95_ms=2000.0,            # api_response_time_p95 < 2000ms
    max_error_rate=1.0,           # error_rate < 1% (percent of samples)
    max_connections_percent=80.0,  # database_connections < 80% of max
    min_percent=95.0,             # bot_workers_active > 95%
    disk_max_percent=80.0,        # disk_space_usage < 80%
    memory_max_percent=80.0,      # memory_usage < 80%
    log_minutes=10,               # "No critical errors in logs (last 10 minutes)"
    log_patterns=["ERROR", "CRITICAL", "Traceback"],
    log_max_matches=0,
    max_ratio_to_baseline=3.0,    # the decision matrix's ">300% baseline"
    http_timeout=10.0,
)

PG_KEYS = tuple(pg_common_argument_spec().keys())
MAX_DETAIL_LINES = 5


# --- arithmetic -----------------------------------------------------------------------------------

def percentile(values, pct):
    """Percentile by linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * (float(pct) / 100.0)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    frac = rank - low
    return float(ordered[low]) + (float(ordered[high]) - float(ordered[low])) * frac


def error_rate(errors, total):
    """Errors as a percentage of the samples taken (0 when nothing was sampled)."""
    if not total:
        return 0.0
    return 100.0 * errors / total


def latency_stats(durations_ms):
    if not durations_ms:
        return dict(p50_ms=None, p95_ms=None, max_ms=None, min_ms=None)
    return dict(p50_ms=round(percentile(durations_ms, 50), 1), p95_ms=round(percentile(durations_ms, 95), 1),
                max_ms=round(max(durations_ms), 1), min_ms=round(min(durations_ms), 1))


def baseline_limit(baseline_ms, ratio):
    """The latency above which a check counts as degraded against its recorded baseline."""
    return float(baseline_ms) * float(ratio)


def percent(part, whole):
    if not whole:
        return 0.0
    return 100.0 * part / whole


def _fmt(number):
    """Numbers in sentences: no trailing .0 for whole numbers."""
    if number is None:
        return "n/a"
    number = float(number)
    if number == int(number):
        return "%d" % int(number)
    return "%.1f" % number


# --- checklist entries ----------------------------------------------------------------------------

def _entry(check, ok, value=None, threshold=None, detail="", crossed=None, **extra):
    entry = dict(name=check["name"], type=check["type"], ok=bool(ok), required=check.get("required", True),
                 value=value, threshold=threshold, detail=detail, crossed=list(crossed or []))
    entry.update(extra)
    return entry


def _error_entry(check, exc, value=None, threshold=None, **extra):
    message = getattr(exc, "msg", None) or to_native(exc)
    return _entry(check, False, value=value, threshold=threshold, detail=message, **extra)


# --- http and login -------------------------------------------------------------------------------

def dotted_get(document, path):
    """Value at a dotted path (``data.items.0.id``); raises KeyError naming the missing part."""
    current = document
    for part in path.split("."):
        if isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise KeyError("%s (no list item %s)" % (path, part))
        elif isinstance(current, dict):
            if part not in current:
                raise KeyError("%s (no key %s)" % (path, part))
            current = current[part]
        else:
            raise KeyError("%s (%s is not an object)" % (path, part))
    return current


def _same(expected, actual):
    if expected == actual:
        return True
    if isinstance(expected, bool) or isinstance(actual, bool):
        return False
    return to_text(expected) == to_text(actual)


def http_request(url, method="GET", headers=None, data=None, timeout=10.0, validate_certs=True):
    """One request. Returns (status, body_text, elapsed_ms); raises ConnectionFailure when unreachable."""
    started = time.monotonic()
    try:
        response = open_url(url, method=method, headers=headers or {}, data=data, timeout=timeout,
                            validate_certs=validate_certs, follow_redirects="safe" if method in ("GET", "HEAD") else "none")
        status = response.getcode()
        body = response.read()
    except HTTPError as exc:
        status = exc.code
        try:
            body = exc.read()
        except Exception:  # pylint: disable=broad-except
            body = b""
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailure(to_native(reason), verb="reach", obj=url)
    elapsed = (time.monotonic() - started) * 1000.0
    return status, to_text(body, errors="surrogate_or_replace"), elapsed


def _request_body(check):
    headers = dict((to_text(k), to_text(v)) for k, v in (check.get("headers") or {}).items())
    if check.get("authorization"):
        headers["Authorization"] = check["authorization"]
    data = None
    if check.get("json") is not None:
        data = json.dumps(check["json"]).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif check.get("body") is not None:
        data = to_text(check["body"]).encode("utf-8")
    return headers, data


def _judge_response(check, status, body):
    """None when the response is what the check expects, else the reason it is not."""
    expected = check.get("status") or [200]
    if status not in expected:
        return "status %s, expected %s" % (status, "/".join(str(s) for s in expected))
    if check.get("body_regex") and not re.search(check["body_regex"], body):
        return "body does not match %s" % check["body_regex"]
    if check.get("json_equals"):
        try:
            document = json.loads(body)
        except ValueError:
            return "body is not JSON"
        for path, want in sorted(check["json_equals"].items()):
            try:
                got = dotted_get(document, path)
            except KeyError as exc:
                return "JSON path missing: %s" % to_native(exc.args[0])
            if not _same(want, got):
                return "JSON %s is %s, expected %s" % (path, json.dumps(got), json.dumps(want))
    return None


def _token_headers(check, ctx):
    if not check.get("use_token"):
        return {}
    source = check.get("token_from") or ctx.get("last_login")
    token = ctx["tokens"].get(source) if source else None
    if not token:
        raise InputError("no token from a login check%s is available (the login check must come first and pass)"
                         % (" %s" % source if source else ""), verb="run", obj="check %s" % check["name"])
    prefix = token["prefix"]
    return {token["header"]: ("%s %s" % (prefix, token["value"])) if prefix else token["value"]}


def _sample_http(check, ctx, headers, data):
    """Take check['samples'] samples with check['concurrency'] at a time; one dict per sample."""
    method = (check.get("method") or "GET").upper()
    timeout = check.get("timeout") or DEFAULTS["http_timeout"]

    def one(_index):
        try:
            status, body, elapsed = http_request(check["url"], method=method, headers=headers, data=data,
                                                 timeout=timeout, validate_certs=check.get("validate_certs", True))
        except ConnectionFailure as exc:
            return dict(status=None, ms=None, error=exc.msg)
        return dict(status=status, ms=elapsed, error=_judge_response(check, status, body), body=body)

    samples = max(1, int(check.get("samples") or 1))
    concurrency = max(1, min(samples, int(check.get("concurrency") or 1)))
    if concurrency == 1:
        return [one(i) for i in range(samples)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(samples)))


def judge_latency(name, p95, max_p95_ms, baseline_ms=None, ratio=None):
    """The thresholds a p95 crosses: the absolute limit and, with a baseline, the ratio to it."""
    crossed = []
    if p95 is None:
        return crossed
    if max_p95_ms is not None and p95 > max_p95_ms:
        crossed.append("%s: p95 %s ms > %s ms" % (name, _fmt(p95), _fmt(max_p95_ms)))
    if baseline_ms and ratio:
        limit = baseline_limit(baseline_ms, ratio)
        if p95 > limit:
            crossed.append("%s: p95 %s ms > %sx baseline %s ms (%s ms)"
                           % (name, _fmt(p95), _fmt(ratio), _fmt(baseline_ms), _fmt(limit)))
    return crossed


def check_http(check, ctx):
    try:
        headers, data = _request_body(check)
        headers.update(_token_headers(check, ctx))
    except InputError as exc:
        return _error_entry(check, exc)
    results = _sample_http(check, ctx, headers, data)
    return _judge_samples(check, ctx, results)


def _judge_samples(check, ctx, results):
    name = check["name"]
    durations = [r["ms"] for r in results if r["ms"] is not None]
    errors = [r for r in results if r["error"]]
    stats = latency_stats(durations)
    rate = error_rate(len(errors), len(results))
    max_p95 = check.get("max_p95_ms")
    max_p95 = DEFAULTS["max_p95_ms"] if max_p95 is None else max_p95
    max_rate = check.get("max_error_rate")
    max_rate = DEFAULTS["max_error_rate"] if max_rate is None else max_rate
    baseline_ms = (ctx.get("baseline") or {}).get(name)
    ratio = ctx.get("max_ratio_to_baseline") or DEFAULTS["max_ratio_to_baseline"]

    crossed = []
    if rate > max_rate:
        crossed.append("%s: error rate %s%% > %s%% (%d of %d samples failed)"
                       % (name, _fmt(rate), _fmt(max_rate), len(errors), len(results)))
    crossed.extend(judge_latency(name, stats["p95_ms"] if durations else None, max_p95, baseline_ms, ratio))

    threshold = dict(max_p95_ms=max_p95, max_error_rate=max_rate)
    if baseline_ms:
        threshold.update(baseline_p95_ms=baseline_ms, max_ratio_to_baseline=ratio,
                         max_p95_from_baseline_ms=baseline_limit(baseline_ms, ratio))
    samples = dict(count=len(results), errors=len(errors), error_rate=round(rate, 2),
                   statuses=sorted(set(r["status"] for r in results if r["status"] is not None)))
    samples.update(stats)
    if baseline_ms and stats["p95_ms"] is not None:
        samples["ratio_to_baseline"] = round(stats["p95_ms"] / float(baseline_ms), 2)

    if crossed:
        detail = "; ".join(c.split(": ", 1)[1] for c in crossed)
        if errors:
            detail += "; first error: %s" % errors[0]["error"]
    elif errors:
        detail = "%d of %d samples failed (within %s%%): %s" % (
            len(errors), len(results), _fmt(max_rate), errors[0]["error"])
    else:
        detail = "%d sample(s), p95 %s ms" % (len(results), _fmt(stats["p95_ms"]))
    return _entry(check, not crossed, value=stats["p95_ms"], threshold=threshold, detail=detail,
                  crossed=crossed, samples=samples)


def check_login(check, ctx):
    """POST credentials, keep the token for later http checks (use_token). Never returns the token."""
    name = check["name"]
    field = "email" if check.get("email") else "username"
    credentials = {field: check.get("email") or check.get("username"), "password": check.get("password")}
    if check.get("body_format") == "form":
        data = urlencode(credentials).encode("utf-8")
        content_type = "application/x-www-form-urlencoded"
    else:
        data = json.dumps(credentials).encode("utf-8")
        content_type = "application/json"
    headers = dict((to_text(k), to_text(v)) for k, v in (check.get("headers") or {}).items())
    headers.setdefault("Content-Type", content_type)
    method = (check.get("method") or "POST").upper()
    try:
        status, body, elapsed = http_request(check["url"], method=method, headers=headers, data=data,
                                             timeout=check.get("timeout") or DEFAULTS["http_timeout"],
                                             validate_certs=check.get("validate_certs", True))
    except ConnectionFailure as exc:
        return _entry(check, False, detail="Failed to log in at %s: %s" % (check["url"], exc.reason))
    token_path = check.get("token_path") or "access_token"
    problem = _judge_response(dict(check, json_equals=None, body_regex=None), status, body)
    token = None
    if problem is None:
        try:
            token = dotted_get(json.loads(body), token_path)
        except (ValueError, KeyError):
            problem = "no token at %s in the response" % token_path
    if problem is None and not token:
        problem = "empty token at %s" % token_path
    if problem:
        return _entry(check, False, value=dict(status=status), detail="Failed to log in as %s: %s"
                      % (credentials[field], problem), samples=dict(count=1, errors=1, p95_ms=round(elapsed, 1)))
    token = to_text(token)
    ctx["secrets"].add(token)
    ctx["tokens"][name] = dict(value=token, header=check.get("token_header") or "Authorization",
                               prefix="Bearer" if check.get("token_prefix") is None else check["token_prefix"])
    ctx["last_login"] = name
    crossed = judge_latency(name, elapsed, check.get("max_p95_ms") if check.get("max_p95_ms") is not None
                            else DEFAULTS["max_p95_ms"], (ctx.get("baseline") or {}).get(name),
                            ctx.get("max_ratio_to_baseline") or DEFAULTS["max_ratio_to_baseline"])
    return _entry(check, not crossed, value=dict(status=status, token_obtained=True),
                  threshold=dict(status=check.get("status") or [200]),
                  detail="; ".join(c.split(": ", 1)[1] for c in crossed) or "logged in as %s, token kept for later checks"
                  % credentials[field], crossed=crossed, samples=dict(count=1, errors=0, p95_ms=round(elapsed, 1)))


# --- postgres -------------------------------------------------------------------------------------

def merged_pg_params(check, module_level):
    """Module-level ``postgres`` options with the check's own connection keys on top."""
    params = dict((k, v.get("default")) for k, v in pg_common_argument_spec().items())
    params.update(dict((k, v) for k, v in (module_level or {}).items() if v is not None))
    params.update(dict((k, check[k]) for k in PG_KEYS if check.get(k) is not None))
    return params


def _table_identifier(name):
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise InputError("table name %r: expected table or schema.table" % name, verb="read", obj="table")
    return pg_sql.Identifier(*parts)


def check_postgres(check, ctx):
    name = check["name"]
    if not HAS_PSYCOPG:
        return _entry(check, False, detail="Failed to connect to PostgreSQL: psycopg (3) is not installed "
                      "on the managed host")
    try:
        settings = connection_settings(merged_pg_params(check, ctx.get("postgres")))
    except InputError as exc:
        return _error_entry(check, exc)
    target = "%s@%s:%s/%s" % (settings.get("login_user"), settings.get("login_unix_socket") or settings.get("login_host"),
                              settings.get("login_port"), settings.get("login_db"))
    limit = check.get("max_connections_percent")
    limit = DEFAULTS["max_connections_percent"] if limit is None else limit
    value = dict(target=target)
    try:
        with psycopg.connect(autocommit=True, **psycopg_kwargs(settings)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                value["select_1"] = cur.fetchone()[0] == 1
                cur.execute("SELECT version(), current_setting('server_version'), "
                            "current_setting('max_connections')::int, "
                            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')")
                version, server_version, max_conn, active = cur.fetchone()
                value.update(version=version, server_version=server_version, max_connections=max_conn,
                             connections=active, connections_percent=round(percent(active, max_conn), 1))
                counts = {}
                for table in check.get("tables") or []:
                    try:
                        cur.execute(pg_sql.SQL("SELECT count(*) FROM {}").format(_table_identifier(table)))
                        counts[table] = cur.fetchone()[0]
                    except (psycopg.Error, InputError) as exc:
                        counts[table] = None
                        value.setdefault("unreadable", {})[table] = getattr(exc, "msg", None) or to_native(exc).strip()
                if check.get("tables"):
                    value["tables"] = counts
    except psycopg.Error as exc:
        reason = to_native(exc).strip().splitlines()[0] if to_native(exc).strip() else exc.__class__.__name__
        return _entry(check, False, value=value, threshold=dict(max_connections_percent=limit),
                      detail="Failed to connect to PostgreSQL %s: %s" % (target, reason))
    crossed = []
    if value["connections_percent"] > limit:
        crossed.append("%s: connections %s%% of max_connections (%d/%d) > %s%%"
                       % (name, _fmt(value["connections_percent"]), value["connections"], value["max_connections"],
                          _fmt(limit)))
    problems = []
    if value.get("unreadable"):
        problems.append("tables not readable: %s" % ", ".join(sorted(value["unreadable"])))
    detail = "; ".join([c.split(": ", 1)[1] for c in crossed] + problems)
    if not detail:
        detail = "SELECT 1 ok, PostgreSQL %s, %d/%d connections (%s%%)" % (
            value["server_version"], value["connections"], value["max_connections"], _fmt(value["connections_percent"]))
        if check.get("tables"):
            detail += ", %d table(s) readable" % len(value["tables"])
    return _entry(check, not crossed and not problems, value=value,
                  threshold=dict(max_connections_percent=limit), detail=detail, crossed=crossed)


# --- process --------------------------------------------------------------------------------------

def parent_pid(pid, proc="/proc"):
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as fh:
            stat = to_text(fh.read(), errors="surrogate_or_replace")
    except (IOError, OSError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def own_lineage(pid=None, proc="/proc"):
    """This process and its ancestors: their command lines carry the pattern being searched for."""
    pid = pid or os.getpid()
    seen = set()
    while pid and pid not in seen:
        seen.add(pid)
        pid = parent_pid(pid, proc)
    return seen


def matching_pids(pattern, proc="/proc", exclude=None):
    regex = re.compile(pattern)
    exclude = own_lineage(proc=proc) if exclude is None else exclude
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        cmdline = proc_cmdline(entry, proc)
        if cmdline and regex.search(cmdline):
            pids.append(int(entry))
    return sorted(pids)


def parse_pm2_jlist(stdout):
    """pm2 jlist prints JSON, sometimes after banner lines: parse from the first '['."""
    start = stdout.find("[")
    if start < 0:
        raise ValueError("no JSON list in pm2 jlist output")
    return json.loads(stdout[start:])


def pm2_online_pids(apps, name):
    return sorted(a.get("pid") for a in apps
                  if a.get("name") == name and (a.get("pm2_env") or {}).get("status") == "online" and a.get("pid"))


def judge_count(name, count, min_count=None, min_percent=None, expected=None):
    """(ok, threshold, crossed) for a process count against a minimum or a percentage of expected."""
    if expected:
        limit = DEFAULTS["min_percent"] if min_percent is None else min_percent
        share = percent(count, expected)
        threshold = dict(min_percent=limit, expected=expected)
        if share < limit:
            return False, threshold, ["%s: %d of %d expected processes (%s%%) < %s%%"
                                      % (name, count, expected, _fmt(share), _fmt(limit))]
        return True, threshold, []
    limit = 1 if min_count is None else min_count
    if count < limit:
        return False, dict(min_count=limit), ["%s: %d processes < %d" % (name, count, limit)]
    return True, dict(min_count=limit), []


def check_process(check, ctx):
    name = check["name"]
    if check.get("pm2_app"):
        try:
            apps = ctx["pm2_jlist"](check)
        except Exception as exc:  # pylint: disable=broad-except
            return _error_entry(check, exc)
        pids = pm2_online_pids(apps, check["pm2_app"])
        what = "pm2 app %s" % check["pm2_app"]
    else:
        try:
            pids = matching_pids(check["pattern"])
        except re.error as exc:
            return _entry(check, False, detail="Failed to match processes: bad pattern %s (%s)" % (check["pattern"], exc))
        what = "processes matching %s" % check["pattern"]
    ok, threshold, crossed = judge_count(name, len(pids), check.get("min_count"), check.get("min_percent"),
                                         check.get("expected"))
    detail = crossed[0].split(": ", 1)[1] if crossed else "%d %s online" % (len(pids), what)
    return _entry(check, ok, value=len(pids), threshold=threshold, detail=detail, crossed=crossed, pids=pids)


# --- log ------------------------------------------------------------------------------------------

ISO_TS = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6})\d*)?\s*(Z|[+-]\d{2}:?\d{2})?")


def parse_line_time(line):
    """The ISO-8601 timestamp at the start of a log line as an aware UTC datetime, or None.

    A timestamp without a zone is local time, as application loggers write it.
    """
    match = ISO_TS.match(line)
    if not match:
        return None
    date, clock, frac, zone = match.groups()
    stamp = datetime.datetime.strptime("%s %s" % (date, clock), "%Y-%m-%d %H:%M:%S")
    if frac:
        stamp = stamp.replace(microsecond=int(frac.ljust(6, "0")))
    if zone in (None, ""):
        return stamp.replace(tzinfo=datetime.datetime.now().astimezone().tzinfo).astimezone(datetime.timezone.utc) \
            if stamp.year > 1970 else None
    if zone == "Z":
        offset = datetime.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return stamp.replace(tzinfo=datetime.timezone(offset)).astimezone(datetime.timezone.utc)


def scan_log(lines, patterns, since=None):
    """Lines matching any pattern, only those stamped at/after ``since`` (continuation lines inherit
    the stamp of the line they continue). Returns (matches, lines_in_window)."""
    regexes = [re.compile(p) for p in patterns]
    current = None
    matches = []
    in_window = 0
    for line in lines:
        stamp = parse_line_time(line)
        if stamp is not None:
            current = stamp
        if since is not None and (current is None or current < since):
            continue
        in_window += 1
        if any(r.search(line) for r in regexes):
            matches.append(line.rstrip("\n"))
    return matches, in_window


def check_log(check, ctx):
    name = check["name"]
    path = check["path"]
    patterns = check.get("patterns") or DEFAULTS["log_patterns"]
    minutes = DEFAULTS["log_minutes"] if check.get("minutes") is None else check["minutes"]
    limit = DEFAULTS["log_max_matches"] if check.get("max_matches") is None else check["max_matches"]
    now = ctx.get("now") or datetime.datetime.now(datetime.timezone.utc)
    since = now - datetime.timedelta(minutes=minutes) if minutes else None
    if check.get("since"):
        # An explicit start of the window (for example the moment a rollback restarted the service)
        # narrows "the last N minutes" so errors of the incident itself are not counted.
        explicit = parse_line_time(check["since"])
        if explicit is None:
            return _entry(check, False, detail="Failed to scan log %s: since %r is not an ISO-8601 timestamp"
                          % (path, check["since"]))
        since = explicit if since is None else max(since, explicit)
    threshold = dict(max_matches=limit, minutes=minutes, patterns=patterns,
                     since=since.strftime("%Y-%m-%dT%H:%M:%SZ") if since is not None else None)
    try:
        with open(path, "rb") as fh:
            lines = to_text(fh.read(), errors="surrogate_or_replace").splitlines()
        matches, in_window = scan_log(lines, patterns, since)
    except (IOError, OSError) as exc:
        return _entry(check, False, threshold=threshold, detail="Failed to read log %s: %s" % (path, exc.strerror or exc))
    except re.error as exc:
        return _entry(check, False, threshold=threshold, detail="Failed to scan log %s: bad pattern (%s)" % (path, exc))
    crossed = []
    window = "in the last %d minutes" % minutes if minutes else "in the whole file"
    if check.get("since") and since is not None:
        window = "since %s" % since.strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(matches) > limit:
        crossed.append("%s: %d error lines %s > %d" % (name, len(matches), window, limit))
    detail = crossed[0].split(": ", 1)[1] if crossed else "%d error lines %s (%d lines scanned)" % (
        len(matches), window, in_window)
    return _entry(check, not crossed, value=len(matches), threshold=threshold, detail=detail, crossed=crossed,
                  matched_lines=[m[:500] for m in matches[-MAX_DETAIL_LINES:]], lines_scanned=in_window)


# --- disk and memory ------------------------------------------------------------------------------

def disk_used_percent(path):
    """Used space as df reports it: used / (used + available to unprivileged users)."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return percent(used, used + avail)


def memory_used_percent(meminfo_text):
    values = {}
    for line in meminfo_text.splitlines():
        key, _sep, rest = line.partition(":")
        if rest.strip():
            values[key.strip()] = int(rest.split()[0])
    total = values.get("MemTotal")
    available = values.get("MemAvailable")
    if not total or available is None:
        raise ValueError("MemTotal/MemAvailable missing from /proc/meminfo")
    return percent(total - available, total)


def _usage_entry(check, what, used, limit):
    name = check["name"]
    used = round(used, 1)
    crossed = ["%s: %s usage %s%% > %s%%" % (name, what, _fmt(used), _fmt(limit))] if used > limit else []
    detail = crossed[0].split(": ", 1)[1] if crossed else "%s usage %s%%" % (what, _fmt(used))
    return _entry(check, not crossed, value=used, threshold=dict(max_percent=limit), detail=detail, crossed=crossed)


def check_disk(check, ctx):
    path = check.get("path") or "/"
    limit = DEFAULTS["disk_max_percent"] if check.get("max_percent") is None else check["max_percent"]
    try:
        used = disk_used_percent(path)
    except OSError as exc:
        return _entry(check, False, threshold=dict(max_percent=limit),
                      detail="Failed to stat %s: %s" % (path, exc.strerror or exc))
    return _usage_entry(check, "disk %s" % path, used, limit)


def check_memory(check, ctx):
    limit = DEFAULTS["memory_max_percent"] if check.get("max_percent") is None else check["max_percent"]
    try:
        with open(ctx.get("meminfo", "/proc/meminfo")) as fh:
            used = memory_used_percent(fh.read())
    except (IOError, OSError, ValueError) as exc:
        return _entry(check, False, threshold=dict(max_percent=limit), detail="Failed to read memory usage: %s" % exc)
    return _usage_entry(check, "memory", used, limit)


RUNNERS = dict(http=check_http, login=check_login, postgres=check_postgres, process=check_process,
               log=check_log, disk=check_disk, memory=check_memory)

REQUIRED_BY_TYPE = dict(http=("url",), login=("url", "password"), log=("path",))


# --- the check set --------------------------------------------------------------------------------

def validate_checks(checks):
    """Refuse bad input before anything runs: at least one check, unique names, per-type required options, usable
    regexes. No check at all would report a service healthy that nothing looked at."""
    if not checks:
        raise InputError("no checks given: a health verdict needs at least one check (types: %s)"
                         % ", ".join(CHECK_TYPES), verb="validate", obj="checks")
    seen = set()
    for check in checks:
        name = check["name"]
        if name in seen:
            raise InputError("check name %s is used twice; names must be unique" % name, verb="validate", obj="checks")
        seen.add(name)
        for key in REQUIRED_BY_TYPE.get(check["type"], ()):
            if check.get(key) in (None, ""):
                raise InputError("check %s (type %s) needs %s" % (name, check["type"], key), verb="validate", obj="checks")
        if check["type"] == "login" and not (check.get("email") or check.get("username")):
            raise InputError("check %s (type login) needs email or username" % name, verb="validate", obj="checks")
        if check["type"] == "process" and not (check.get("pattern") or check.get("pm2_app")):
            raise InputError("check %s (type process) needs pattern or pm2_app" % name, verb="validate", obj="checks")
        for key in ("body_regex", "pattern"):
            if check.get(key):
                try:
                    re.compile(check[key])
                except re.error as exc:
                    raise InputError("check %s: %s is not a valid regular expression (%s)" % (name, key, exc),
                                     verb="validate", obj="checks")
        if check.get("json") is not None and check.get("body") is not None:
            raise InputError("check %s: body and json are mutually exclusive" % name, verb="validate", obj="checks")


def run_checks(checks, ctx):
    ctx.setdefault("tokens", {})
    ctx.setdefault("secrets", set())
    checklist = []
    for check in checks:
        try:
            checklist.append(RUNNERS[check["type"]](check, ctx))
        except Exception as exc:  # pylint: disable=broad-except
            # A check that breaks is a failed check, not a crashed validation run.
            checklist.append(_entry(check, False, detail="Failed to run %s check: %s" % (check["type"], to_native(exc))))
    return checklist


def summarize(checklist):
    failed = [c for c in checklist if not c["ok"]]
    required_failed = [c for c in failed if c["required"]]
    crossed = []
    for c in checklist:
        crossed.extend(c["crossed"])
    return dict(passed=len(checklist) - len(failed), failed=len(failed), total=len(checklist),
                healthy=not required_failed, failed_checks=[c["name"] for c in failed],
                failed_required=[c["name"] for c in required_failed], crossed=crossed)


def failure_message(summary, checklist):
    parts = []
    for c in checklist:
        if not c["ok"] and c["required"]:
            parts.append("%s (%s)" % (c["name"], c["detail"]))
    return "Failed to validate service health: %d of %d required checks failed: %s" % (
        len(summary["failed_required"]), len([c for c in checklist if c["required"]]), "; ".join(parts))


def validate_until_healthy(checks, ctx, retries=0, delay=5.0, deadline_s=None, sleep=time.sleep, clock=time.monotonic):
    """Run the whole set until healthy: up to ``retries`` more attempts and/or until ``deadline_s``."""
    started = clock()
    attempts = 0
    while True:
        attempts += 1
        ctx["tokens"] = {}
        ctx["last_login"] = None
        checklist = run_checks(checks, ctx)
        summary = summarize(checklist)
        if summary["healthy"]:
            break
        more_by_count = attempts <= (retries or 0)
        more_by_deadline = deadline_s is not None and (clock() - started + (delay or 0)) < deadline_s
        if not (more_by_count or more_by_deadline):
            break
        if delay:
            sleep(delay)
    return checklist, summary, dict(attempts=attempts, elapsed_s=round(clock() - started, 2))


# --- the module's entry point ---------------------------------------------------------------------

def check_options_spec():
    """Suboptions of one item of ``checks``: typed check options plus the connection keys (no defaults,
    no aliases, so that unset keys fall back to the module-level ``postgres`` options)."""
    spec = dict(
        name=dict(type="str", required=True),
        type=dict(type="str", required=True, choices=list(CHECK_TYPES)),
        required=dict(type="bool", default=True),
        url=dict(type="str"),
        method=dict(type="str"),
        # headers, body and json may carry secrets: the modules mask the secret ones (module_utils._secrets);
        # no_log on the whole option would mask every value, "1" and "rollback" included, everywhere
        headers=dict(type="dict", no_log=False),
        authorization=dict(type="str", no_log=True),
        body=dict(type="str", no_log=False),
        json=dict(type="raw", no_log=False),
        status=dict(type="list", elements="int"),
        json_equals=dict(type="dict"),
        body_regex=dict(type="str"),
        samples=dict(type="int", default=1),
        concurrency=dict(type="int", default=1),
        max_p95_ms=dict(type="float"),
        max_error_rate=dict(type="float"),
        timeout=dict(type="float"),
        validate_certs=dict(type="bool", default=True),
        use_token=dict(type="bool", default=False),
        token_from=dict(type="str", no_log=False),
        email=dict(type="str"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        body_format=dict(type="str", default="json", choices=["json", "form"]),
        token_path=dict(type="str", default="access_token", no_log=False),
        token_header=dict(type="str", default="Authorization", no_log=False),
        token_prefix=dict(type="str", no_log=False),
        max_connections_percent=dict(type="float"),
        tables=dict(type="list", elements="str"),
        pattern=dict(type="str"),
        pm2_app=dict(type="str"),
        pm2_bin=dict(type="path"),
        pm2_home=dict(type="path"),
        min_count=dict(type="int"),
        min_percent=dict(type="float"),
        expected=dict(type="int"),
        path=dict(type="path"),
        patterns=dict(type="list", elements="str"),
        minutes=dict(type="int"),
        since=dict(type="str"),
        max_matches=dict(type="int"),
        max_percent=dict(type="float"),
    )
    for key, option in pg_common_argument_spec().items():
        option.pop("default", None)
        option.pop("aliases", None)
        spec[key] = option
    return spec


def argument_spec():
    return dict(
        checks=dict(type="list", elements="dict", required=True, options=check_options_spec()),
        postgres=dict(type="dict", options=pg_common_argument_spec()),
        baseline=dict(type="dict", default={}),
        max_ratio_to_baseline=dict(type="float", default=DEFAULTS["max_ratio_to_baseline"]),
        retries=dict(type="int", default=0),
        delay=dict(type="float", default=5.0),
        deadline_s=dict(type="float"),
    )


def _pm2_jlist_runner(module):
    from ansible_collections.replyx.rollback.plugins.module_utils._service import pm2_jlist  # pylint: disable=import-outside-toplevel

    def run(check):
        return pm2_jlist(module, check.get("pm2_bin"), check.get("pm2_home"))
    return run


def run(module):
    """Validate, run the checks until healthy or out of attempts, return the module result."""
    params = module.params
    validate_checks(params["checks"])
    baseline = {}
    for key, value in (params.get("baseline") or {}).items():
        try:
            baseline[key] = float(value)
        except (TypeError, ValueError):
            raise InputError("baseline for %s is %r, expected a p95 in milliseconds" % (key, value),
                             verb="validate", obj="baseline")
    ctx = dict(postgres=params.get("postgres"), baseline=baseline,
               max_ratio_to_baseline=params["max_ratio_to_baseline"], pm2_jlist=_pm2_jlist_runner(module),
               secrets=set(), tokens={})
    checklist, summary, timing = validate_until_healthy(params["checks"], ctx, retries=params["retries"],
                                                        delay=params["delay"], deadline_s=params.get("deadline_s"))
    # Tokens a login check obtained are masked wherever they might surface.
    module.no_log_values.update(ctx["secrets"])
    result = dict(changed=False, checklist=checklist, summary=summary, attempts=timing["attempts"],
                  elapsed_s=timing["elapsed_s"])
    if not summary["healthy"]:
        result["msg"] = failure_message(summary, checklist)
    return result
