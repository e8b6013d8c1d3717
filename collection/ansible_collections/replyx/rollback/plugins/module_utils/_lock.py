# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rollback at a time per environment: the lock behind replyx.rollback.rollback_lock.

Two backends keep the same record (environment, owner, run_id, level, acquired_at, host, pid, ttl_s):
- ``file``: a JSON file created with O_EXCL, so only one creator wins;
- ``postgres``: a row in ``replyx_rollback_lock`` in the application database, taken with
  INSERT ... ON CONFLICT DO NOTHING inside a transaction, the holder row read FOR UPDATE.

The decisions (free, held by us, held by another, stale, takeover) are pure functions of the record,
so they are the same for both backends and tested without either.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import getpass
import json
import os
import re
import socket
import tempfile
import time

from ansible.module_utils.common.text.converters import to_native, to_text

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    ConnectionFailure,
    InputError,
    SafetyRefusal,
)
from ansible_collections.replyx.rollback.plugins.module_utils._pg import (
    connection_settings,
    pg_common_argument_spec,
    psycopg_kwargs,
)

try:
    import psycopg
    from psycopg.rows import dict_row
    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover - depends on the managed host
    psycopg = None
    dict_row = None
    HAS_PSYCOPG = False

TABLE = "replyx_rollback_lock"
FIELDS = ("environment", "owner", "run_id", "level", "acquired_at", "host", "pid", "ttl_s")


def argument_spec():
    spec = dict(
        state=dict(type="str", default="acquired", choices=["acquired", "released"]),
        environment=dict(type="str", required=True),
        backend=dict(type="str", default="file", choices=["file", "postgres"]),
        path=dict(type="path"),
        owner=dict(type="str"),
        run_id=dict(type="str", required=True),
        level=dict(type="str"),
        ttl_s=dict(type="int", default=3600),
        takeover_stale=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        holder_pid=dict(type="int"),
    )
    spec.update(pg_common_argument_spec())
    return spec


# --- time -----------------------------------------------------------------------------------------

def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(stamp):
    return stamp.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    if isinstance(text, datetime.datetime):
        return text if text.tzinfo else text.replace(tzinfo=datetime.timezone.utc)
    text = to_text(text).strip().replace("Z", "+00:00")
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.datetime.strptime(text.replace("+00:00", "+0000"), fmt)
        except ValueError:
            continue
    raise ValueError("not an ISO-8601 time: %r" % text)


# --- decisions ------------------------------------------------------------------------------------

def pid_alive(pid):
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % int(pid), "rb") as fh:
            stat = to_text(fh.read())
    except (IOError, OSError, ValueError):
        return False
    fields = stat[stat.rfind(")") + 2:].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def holder_pid_default(start=None, proc="/proc"):
    """The process that holds the lock on this host: the outermost ansible/ansible-playbook/ansible-runner
    ancestor of this module (the module and the per-task worker exit at once; the run itself does not),
    else None."""
    pid = start or os.getppid()
    found = None
    for _hop in range(32):
        if not pid or pid == 1:
            return found
        try:
            with open("%s/%d/cmdline" % (proc, pid), "rb") as fh:
                argv = [to_text(a) for a in fh.read().split(b"\0") if a]
            with open("%s/%d/stat" % (proc, pid), "rb") as fh:
                stat = to_text(fh.read())
        except (IOError, OSError):
            return found
        if any(os.path.basename(a) in ("ansible", "ansible-playbook", "ansible-runner") for a in argv[:2]):
            found = pid
        fields = stat[stat.rfind(")") + 2:].split()
        pid = int(fields[1]) if len(fields) > 1 else None
    return found


def age_s(record, now):
    return (now - parse_iso(record["acquired_at"])).total_seconds()


def human_age(seconds):
    """45 s, 5 min 3 s, 2 h 5 min: how long a lock has been held, for people."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % (seconds // 60, seconds % 60)
    return "%d h %d min" % (seconds // 3600, seconds % 3600 // 60)


def liveness(record, this_host, check_pid=True, alive=pid_alive):
    """(alive, said): True/False when the holder's PID could be checked here, None when it could not."""
    pid, host = record.get("pid"), record.get("host")
    if not pid:
        return None, "its holder process was not recorded"
    if not check_pid or host != this_host:
        return None, "holder PID %s on %s cannot be checked from %s" % (pid, host or "an unknown host", this_host)
    if alive(pid):
        return True, "holder PID %s on %s is running" % (pid, host)
    return False, "holder PID %s on %s is gone" % (pid, host)


def is_stale(record, now, ttl_s, this_host, check_pid=True, alive=pid_alive):
    """(stale, why). Stale = its holder process is known to be gone (a killed run: at any age), or it is
    older than the holder's ttl and its holder is not known to be running."""
    ttl = record.get("ttl_s") or ttl_s
    age = age_s(record, now)
    live, said = liveness(record, this_host, check_pid, alive)
    if live is False:
        return True, "held for %s and %s" % (human_age(age), said)
    if age <= ttl:
        return False, "held for %s, within its ttl of %ds; %s" % (human_age(age), ttl, said)
    if live:
        return False, "older than its ttl of %ds but %s" % (ttl, said)
    return True, "held for %s, past its ttl of %ds; %s" % (human_age(age), ttl, said)


def describe(record):
    return "held by %s (run %s, level %s) since %s" % (
        record.get("owner") or "unknown", record.get("run_id"), record.get("level") or "unknown",
        record.get("acquired_at"))


SAME_SECOND = ("another run with the same run id holds it (two runs started in the same second); this run "
               "changes nothing: start it again")


def another_process(holder, run_id, pid, this_host, alive=pid_alive):
    """The lock carries this run id but names another process on this host that still runs: two runs started in
    the same second (run ids are the start time and the level). When either PID is unknown, the holder is on
    another host or its process is gone (the same run id used again by a later process), the run id alone decides,
    as before."""
    return (holder.get("run_id") == run_id and bool(holder.get("pid")) and bool(pid)
            and holder.get("host") == this_host and holder.get("pid") != pid and bool(alive(holder.get("pid"))))


def decide_acquire(holder, request, now, this_host, takeover_stale, check_pid=True, alive=pid_alive):
    """What acquiring means given the current holder: ('take', None), ('ours', None), ('takeover', why)
    or ('refuse', message). A refusal says how old the lock is and whether its holder still runs."""
    if holder is None:
        return "take", None
    if another_process(holder, request["run_id"], request.get("pid"), this_host, alive):
        return "refuse", "%s: %s" % (describe(holder), SAME_SECOND)
    if holder.get("run_id") == request["run_id"]:
        return "ours", None
    stale, why = is_stale(holder, now, request["ttl_s"], this_host, check_pid, alive)
    if stale and takeover_stale:
        return "takeover", why
    message = "%s (%s)" % (describe(holder), why)
    if stale:
        message += "; the lock is stale: set takeover_stale=true to take it over"
    return "refuse", message


def decide_release(holder, run_id, force, pid=None, this_host=None, alive=pid_alive):
    """('free', None), ('release', None), ('force', None) or ('refuse', message). ``pid``/``this_host``: the
    releasing run's holder process, so a run refused at the lock never frees the lock of another run that started
    in the same second (same run id)."""
    if holder is None:
        return "free", None
    if another_process(holder, run_id, pid, this_host, alive) and not force:
        return "refuse", "%s: the lock is another run's (same run id, another process); left as it is" % describe(holder)
    if holder.get("run_id") == run_id:
        return "release", None
    if force:
        return "force", None
    return "refuse", "%s; release it with that run_id or force=true" % describe(holder)


def public(record):
    if record is None:
        return None
    out = dict((k, record.get(k)) for k in FIELDS)
    if isinstance(out["acquired_at"], datetime.datetime):
        out["acquired_at"] = iso(out["acquired_at"])
    return out


# --- file backend ---------------------------------------------------------------------------------

class FileBackend(object):
    check_pid = True

    def __init__(self, params):
        self.path = params.get("path") or "/var/lock/replyx-rollback-%s.json" % params["environment"]

    def where(self):
        return self.path

    def read(self):
        """The holder record or None. A file being written right now is retried briefly."""
        for _attempt in range(10):
            try:
                with open(self.path) as fh:
                    text = fh.read()
            except (IOError, OSError) as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise ConnectionFailure("cannot read %s: %s" % (self.path, exc.strerror), verb="read",
                                        obj="rollback lock file")
            try:
                record = json.loads(text)
                if isinstance(record, dict) and record.get("run_id"):
                    return record
            except ValueError:
                pass
            time.sleep(0.1)
        # Unreadable for a second: a holder we cannot name, aged by the file's mtime.
        mtime = datetime.datetime.fromtimestamp(os.stat(self.path).st_mtime, datetime.timezone.utc)
        return dict(owner="unknown (unreadable lock file %s)" % self.path, run_id="unknown", level=None,
                    acquired_at=iso(mtime), host=None, pid=None, ttl_s=None)

    def create(self, record):
        """Create the lock file only if it does not exist (O_EXCL). False when someone else has it."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise InputError("directory %s does not exist" % directory, verb="create", obj="rollback lock file")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise ConnectionFailure("cannot create %s: %s" % (self.path, exc.strerror), verb="create",
                                    obj="rollback lock file")
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, sort_keys=True)
            fh.write("\n")
        return True

    def replace(self, record, expected):
        """Take over: write the new record atomically, only if the holder is still the one we judged."""
        current = self.read()
        if (current or {}).get("run_id") != expected.get("run_id") or \
                (current or {}).get("acquired_at") != expected.get("acquired_at"):
            return False
        fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=os.path.dirname(os.path.abspath(self.path)))
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.path)
        return True

    def acquire(self, record, decide):
        holder = self.read()
        verdict, why = decide(holder)
        if verdict == "take":
            if not self.create(record):
                holder = self.read()
                verdict, why = decide(holder)
                if verdict == "take":  # vanished again in between: one more clean try
                    verdict = "take" if self.create(record) else "refuse"
                    why = why or describe(self.read() or {})
        elif verdict == "takeover" and not self.replace(record, holder):
            verdict, why = "refuse", describe(self.read() or {})
        return verdict, why, holder

    def release(self, run_id, decide):
        holder = self.read()
        verdict, why = decide(holder)
        if verdict in ("release", "force"):
            try:
                os.unlink(self.path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return verdict, why, holder

    def peek(self):
        return self.read()


# --- postgres backend -----------------------------------------------------------------------------

CREATE_SQL = ("CREATE TABLE IF NOT EXISTS %s (environment text PRIMARY KEY, owner text, run_id text NOT NULL, "
              "level text, acquired_at timestamptz NOT NULL DEFAULT now(), host text, pid integer, ttl_s integer)" % TABLE)
INSERT_SQL = ("INSERT INTO %s (environment, owner, run_id, level, acquired_at, host, pid, ttl_s) "
              "VALUES (%%(environment)s, %%(owner)s, %%(run_id)s, %%(level)s, now(), %%(host)s, %%(pid)s, %%(ttl_s)s) "
              "ON CONFLICT (environment) DO NOTHING RETURNING %s" % (TABLE, ", ".join(FIELDS)))
SELECT_SQL = "SELECT %s FROM %s WHERE environment = %%(environment)s FOR UPDATE" % (", ".join(FIELDS), TABLE)
TAKEOVER_SQL = ("UPDATE %s SET owner = %%(owner)s, run_id = %%(run_id)s, level = %%(level)s, acquired_at = now(), "
                "host = %%(host)s, pid = %%(pid)s, ttl_s = %%(ttl_s)s WHERE environment = %%(environment)s "
                "RETURNING %s" % (TABLE, ", ".join(FIELDS)))
DELETE_SQL = "DELETE FROM %s WHERE environment = %%(environment)s" % TABLE


class PostgresBackend(object):
    # The holder's PID is checked only when it ran on the host this module runs on (see liveness()).
    check_pid = True

    def __init__(self, params, check_mode):
        if not HAS_PSYCOPG:
            raise InputError("psycopg (3) is not installed on this host", verb="use", obj="postgres lock backend")
        self.settings = connection_settings(params)
        self.check_mode = check_mode
        self.queries = []

    def where(self):
        s = self.settings
        return "%s.%s@%s:%s" % (s.get("login_db"), TABLE, s.get("login_unix_socket") or s.get("login_host"),
                                s.get("login_port"))

    def _connect(self):
        try:
            return psycopg.connect(row_factory=dict_row, **psycopg_kwargs(self.settings))
        except psycopg.Error as exc:
            raise ConnectionFailure(to_native(exc).strip().splitlines()[0] if to_native(exc).strip() else repr(exc),
                                    verb="connect to", obj="PostgreSQL %s" % self.where())

    def _execute(self, cur, query, args=None):
        self.queries.append(query)
        cur.execute(query, args)

    def _table_exists(self, cur):
        self._execute(cur, "SELECT to_regclass(%(name)s) IS NOT NULL AS present", dict(name=TABLE))
        return cur.fetchone()["present"]

    def _prepare(self, cur):
        """Create the table once; concurrent creators serialise on a transaction advisory lock."""
        if self._table_exists(cur):
            return
        self._execute(cur, "SELECT pg_advisory_xact_lock(hashtext(%(name)s))", dict(name=TABLE))
        self._execute(cur, CREATE_SQL)

    def acquire(self, record, decide):
        args = dict((k, record.get(k)) for k in FIELDS)
        with self._connect() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    if self.check_mode:
                        holder = self._peek(cur)
                        verdict, why = decide(holder)
                        return verdict, why, holder
                    self._prepare(cur)
                    self._execute(cur, INSERT_SQL, args)
                    row = cur.fetchone()
                    if row is not None:
                        record.update(public(row))
                        return "take", None, None
                    self._execute(cur, SELECT_SQL, args)
                    holder = public(cur.fetchone())
                    verdict, why = decide(holder)
                    if verdict == "takeover":
                        self._execute(cur, TAKEOVER_SQL, args)
                        record.update(public(cur.fetchone()))
                    elif verdict == "ours":
                        record.update(holder)
                    return verdict, why, holder

    def _peek(self, cur):
        if not self._table_exists(cur):
            return None
        self._execute(cur, SELECT_SQL.replace(" FOR UPDATE", ""), dict(environment=self.environment))
        return public(cur.fetchone())

    def release(self, run_id, decide):
        with self._connect() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    if not self._table_exists(cur):
                        return "free", None, None
                    self._execute(cur, SELECT_SQL, dict(environment=self.environment))
                    holder = public(cur.fetchone())
                    verdict, why = decide(holder)
                    if verdict in ("release", "force") and not self.check_mode:
                        self._execute(cur, DELETE_SQL, dict(environment=self.environment))
                    return verdict, why, holder

    def peek(self):
        with self._connect() as conn:
            with conn.cursor() as cur:
                return self._peek(cur)


_ENV_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z')


# --- the module's entry point ---------------------------------------------------------------------

def run(module):
    params = module.params
    env = params["environment"]
    if not env.strip() or not params["run_id"].strip():
        raise InputError("environment and run_id must not be empty", verb="validate", obj="options")
    if not _ENV_NAME.match(env) or ".." in env:
        # the name becomes part of the default lock path: no separators, no '..', nothing a shell or path splits
        raise InputError("environment %r is not a name (letters, digits, '.', '_' and '-', at most 63 characters, "
                         "for example production, staging, lab)" % env, verb="validate", obj="options")
    if params["ttl_s"] <= 0:
        raise InputError("ttl_s must be positive", verb="validate", obj="options")
    this_host = socket.gethostname()
    if params["backend"] == "file":
        backend = FileBackend(params)
    else:
        backend = PostgresBackend(params, module.check_mode)
    backend.environment = env
    result = dict(changed=False, environment=env, backend=params["backend"], location=backend.where(),
                  state=params["state"])
    if params["state"] == "acquired":
        _acquire(module, backend, this_host, result)
    else:
        _release(module, backend, result)
    if getattr(backend, "queries", None):
        result["queries"] = backend.queries
    return result


def _acquire(module, backend, this_host, result):
    params = module.params
    now = utcnow()
    record = dict(environment=params["environment"], owner=params.get("owner") or "%s@%s" % (getpass.getuser(), this_host),
                  run_id=params["run_id"], level=params.get("level"), acquired_at=iso(now), host=this_host,
                  pid=params.get("holder_pid") or holder_pid_default(), ttl_s=params["ttl_s"])

    def decide(holder):
        return decide_acquire(holder, record, utcnow(), this_host, params["takeover_stale"], backend.check_pid)

    if module.check_mode and params["backend"] == "file":
        holder = backend.peek()
        verdict, why = decide(holder)
    else:
        verdict, why, holder = backend.acquire(record, decide)
    if verdict == "refuse":
        current = holder or {}
        alive = liveness(current, this_host, backend.check_pid)[0] if current else None
        age = int(age_s(current, utcnow())) if current.get("acquired_at") else None
        raise SafetyRefusal(why, verb="acquire", obj="rollback lock %s" % params["environment"],
                            holder=public(holder), holder_age_s=age, holder_alive=alive, location=result["location"])
    if verdict == "ours":
        result["lock"] = public(holder)
        result["msg"] = "rollback lock %s already held by this run" % params["environment"]
        return
    result["changed"] = True
    result["lock"] = public(record)
    if verdict == "takeover":
        result["took_over"] = dict(public(holder), reason=why)
        result["msg"] = "took over stale rollback lock %s from %s (%s)" % (params["environment"], describe(holder), why)
    else:
        result["msg"] = "acquired rollback lock %s" % params["environment"]
    if module._diff:
        result["diff"] = dict(before=json.dumps(public(holder), sort_keys=True, indent=1) + "\n" if holder else "",
                              after=json.dumps(public(record), sort_keys=True, indent=1) + "\n")


def _release(module, backend, result):
    params = module.params

    pid, this_host = params.get("holder_pid") or holder_pid_default(), socket.gethostname()

    def decide(holder):
        return decide_release(holder, params["run_id"], params["force"], pid, this_host)

    if module.check_mode and params["backend"] == "file":
        holder = backend.peek()
        verdict, why = decide(holder)
    else:
        verdict, why, holder = backend.release(params["run_id"], decide)
    if verdict == "refuse":
        raise SafetyRefusal(why, verb="release", obj="rollback lock %s" % params["environment"],
                            holder=public(holder), location=result["location"])
    result["lock"] = None
    if verdict == "free":
        result["msg"] = "rollback lock %s was not held" % params["environment"]
        return
    result["changed"] = True
    result["released"] = public(holder)
    result["msg"] = "released rollback lock %s%s" % (params["environment"],
                                                     " held by another run (force)" if verdict == "force" else "")
    if module._diff:
        result["diff"] = dict(before=json.dumps(public(holder), sort_keys=True, indent=1) + "\n", after="")
