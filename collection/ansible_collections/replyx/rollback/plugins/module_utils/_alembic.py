# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alembic downgrades run with the application's own interpreter.

Alembic, SQLAlchemy, the database driver and the application's models live in the application's
virtualenv, not in the Python that runs Ansible modules. So the module ships a small helper program
(``HELPER``, below) that it writes to the module's temporary directory and runs with the application's
interpreter. The helper answers in JSON:

``state``      current revision(s) read from the database's ``alembic_version``, the heads and the full
               history (revision, down revisions, message, ``downgrade_drops_data``) from alembic's
               ``Config`` + ``ScriptDirectory`` + ``MigrationContext``; no CLI text is scraped.
``sql``        the offline SQL of ``current:target`` (alembic's ``--sql`` mode), nothing is executed.
``downgrade``  takes a session-level ``pg_advisory_lock`` on its own connection (waiting at most
               ``lock_timeout`` seconds, then reporting who holds it), re-reads the current revision
               under the lock, runs ``command.downgrade`` in the same process while the lock is held,
               verifies the stamped revision(s) and releases the lock.

The database URL reaches the helper in the environment only (``REPLYX_ALEMBIC_DATABASE_URL`` and the
application's own ``DATABASE_URL``), never in argv. Everything else - resolving the target, ancestry,
the ordered steps and the data-loss decision - is plain Python here, unit-tested without a database.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible_collections.replyx.rollback.plugins.module_utils._errors import (
    CommandFailure,
    ConnectionFailure,
    InputError,
    SafetyRefusal,
)
from ansible_collections.replyx.rollback.plugins.module_utils._pg import _parse_url

# int.from_bytes(sha256(b"replyx.alembic").digest()[:8], "big", signed=True)
DEFAULT_LOCK_ID = 1371980160693611854

URL_ENV = "REPLYX_ALEMBIC_DATABASE_URL"
RESULT_MARK = "@@REPLYX_ALEMBIC_RESULT@@"
HELPER_NAME = "replyx_alembic_helper.py"

# The helper program. It runs under the application's interpreter (any Python 3 with alembic and
# SQLAlchemy 1.4/2.x), so it is self-contained and depends on nothing from this collection.
HELPER = r'''
import io
import json
import os
import signal
import sys
import time
import traceback

RESULT_MARK = "@@REPLYX_ALEMBIC_RESULT@@"
URL_ENV = "REPLYX_ALEMBIC_DATABASE_URL"
APP_NAME = "replyx.alembic_downgrade"
_SECRETS = []


class HelperError(Exception):
    def __init__(self, kind, message, **details):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.details = details


class HelperTimeout(BaseException):
    pass


def scrub(text):
    text = "%s" % (text,)
    for secret in _SECRETS:
        if secret:
            text = text.replace(secret, "********")
    return text


def first_line(exc):
    orig = getattr(exc, "orig", None)
    text = "%s" % (orig if orig is not None else exc,)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return scrub(" ".join(lines[:3]) if lines else type(exc).__name__)


def load_libs():
    try:
        import alembic  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise HelperError("missing", "%s cannot import alembic/sqlalchemy (%s)" % (sys.executable, exc))


def make_engine(url):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool
    try:
        u = make_url(url)
    except Exception as exc:
        raise HelperError("input", "malformed database URL (%s)" % first_line(exc))
    driver = u.drivername
    if driver in ("postgres", "postgresql"):
        driver = "postgresql"
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            try:
                import psycopg  # noqa: F401
                driver = "postgresql+psycopg"
            except ImportError:
                pass
        u = u.set(drivername=driver)
    if u.password:
        _SECRETS.append("%s" % u.password)
    connect_args = {"application_name": APP_NAME} if u.drivername.startswith("postgresql") else {}
    try:
        return create_engine(u, poolclass=NullPool, connect_args=connect_args)
    except Exception as exc:
        raise HelperError("input", "cannot use database URL (%s)" % first_line(exc))


def connect(engine):
    try:
        return engine.connect()
    except Exception as exc:
        raise HelperError("connection", first_line(exc))


def same_database(a, b):
    def key(u):
        return (u.host or "", int(u.port or 5432), u.database or "", u.username or "")
    return key(a) == key(b)


def make_config(args, output_buffer=None):
    from alembic.config import Config
    path = args["config"]
    if not os.path.isfile(path):
        raise HelperError("config", "%s does not exist" % path)
    cfg = Config(path, output_buffer=output_buffer)
    cfg.attributes["replyx_rollback"] = True
    url = os.environ.get(URL_ENV)
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def load_script(cfg):
    from alembic.script import ScriptDirectory
    try:
        script = ScriptDirectory.from_config(cfg)
        revisions = list(script.walk_revisions(base="base", head="heads"))
        heads = list(script.get_heads())
    except Exception as exc:
        raise HelperError("scripts", "cannot load the migration scripts (%s: %s)"
                          % (type(exc).__name__, first_line(exc)))
    return script, revisions, heads


def describe(sc):
    down = sc.down_revision
    if down is None:
        downs = []
    elif isinstance(down, (list, tuple)):
        downs = list(down)
    else:
        downs = [down]
    drops = getattr(sc.module, "downgrade_drops_data", None)
    declared = hasattr(sc.module, "downgrade_drops_data")
    if declared and not (isinstance(drops, (list, tuple)) and all(isinstance(d, str) for d in drops)):
        drops = None
        declared = False
    # ``additive = True``: upgrade() only adds (tables, indexes, nullable or defaulted columns), so the code of
    # the previous revision runs on the upgraded schema - a rollback can switch the code before the downgrade.
    additive = getattr(sc.module, "additive", False) is True
    return dict(revision=sc.revision, down_revisions=downs,
                message=(sc.doc or "").strip(), branch_labels=sorted(sc.branch_labels or []),
                drops_data=list(drops) if declared else None, drops_data_declared=declared, additive=additive)


def current_heads(conn):
    from alembic.runtime.migration import MigrationContext
    ctx = MigrationContext.configure(conn)
    return sorted(ctx.get_current_heads())


def action_state(args, url):
    cfg = make_config(args)
    _script, revisions, heads = load_script(cfg)
    engine = make_engine(url)
    conn = connect(engine)
    try:
        current = current_heads(conn)
    finally:
        conn.close()
        engine.dispose()
    import alembic
    return dict(current=current, heads=sorted(heads), history=[describe(sc) for sc in revisions],
                alembic_version=alembic.__version__, python=sys.executable)


def action_sql(args, url):
    from alembic import command
    buf = io.StringIO()
    cfg = make_config(args, output_buffer=buf)
    load_script(cfg)
    try:
        command.downgrade(cfg, "%s:%s" % (args["start"], args["destination"]), sql=True)
    except HelperError:
        raise
    except Exception as exc:
        raise HelperError("sql", "cannot render the offline SQL (%s: %s)" % (type(exc).__name__, first_line(exc)))
    return dict(sql=scrub(buf.getvalue()))


def lock_holder(conn, key):
    from sqlalchemy import text
    hi = (key >> 32) & 0xFFFFFFFF
    lo = key & 0xFFFFFFFF
    rows = conn.execute(text(
        "SELECT a.pid, a.application_name, a.usename, a.backend_start, a.query_start, a.state "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :hi "
        "AND l.objid::bigint = :lo AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        {"hi": hi, "lo": lo}).fetchall()
    return [dict(pid=r[0], application_name=r[1], user=r[2], since=r[3].isoformat() if r[3] else None,
                 query_start=r[4].isoformat() if r[4] else None, state=r[5]) for r in rows]


def acquire(conn, key, wait):
    from sqlalchemy import text
    started = time.monotonic()
    deadline = started + max(0, wait)
    while True:
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            return round(time.monotonic() - started, 3)
        if time.monotonic() >= deadline:
            holders = lock_holder(conn, key)
            who = ", ".join("pid %s (application_name %r, user %s, since %s)"
                            % (h["pid"], h["application_name"], h["user"], h["since"]) for h in holders)
            raise HelperError("lock", "advisory lock %s is held by %s; waited %ss"
                              % (key, who or "another session", wait),
                              lock=dict(key=key, acquired=False, waited_s=round(time.monotonic() - started, 3),
                                        holders=holders))
        time.sleep(0.2)


def action_downgrade(args, url):
    from alembic import command
    from sqlalchemy import event, text
    from sqlalchemy.engine import Engine
    key = int(args["lock_id"])
    expected_before = sorted(args["expected_current"])
    expected_after = sorted(args["expected_after"])
    cfg = make_config(args)
    load_script(cfg)
    engine = make_engine(url)
    lock_conn = connect(engine).execution_options(isolation_level="AUTOCOMMIT")
    lock = dict(key=key, acquired=False)
    foreign = []

    def on_engine_connect(conn, *_args):
        eng = conn.engine
        if eng is engine:
            return
        foreign.append(eng.url.render_as_string(hide_password=True)
                       if hasattr(eng.url, "render_as_string") else repr(eng.url))
        if not same_database(eng.url, engine.url):
            raise HelperError("mismatch", "the application's env.py connects to %s, not to the database that "
                              "was planned and locked (%s); refusing to migrate"
                              % (foreign[-1], engine.url.render_as_string(hide_password=True)
                                 if hasattr(engine.url, "render_as_string") else repr(engine.url)))

    try:
        lock["waited_s"] = acquire(lock_conn, key, int(args["lock_timeout"]))
        lock["acquired"] = True
        lock["backend_pid"] = lock_conn.execute(text("SELECT pg_backend_pid()")).scalar()
        before = current_heads(lock_conn)
        if before != expected_before:
            if before == expected_after:
                return dict(already=True, before=before, after=before, lock=lock, migration_connection=None)
            raise HelperError("changed", "the current revision changed from %s to %s while waiting for the lock; "
                              "plan again" % (",".join(expected_before) or "base", ",".join(before) or "base"),
                              current=before)
        event.listen(Engine, "engine_connect", on_engine_connect)
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, args["destination"])
        except HelperError:
            raise
        except HelperTimeout:
            raise
        except Exception as exc:
            raise HelperError("migration", "%s: %s" % (type(exc).__name__, first_line(exc)),
                              current=current_heads(lock_conn), traceback=scrub(traceback.format_exc()))
        finally:
            event.remove(Engine, "engine_connect", on_engine_connect)
        after = current_heads(lock_conn)
        if after != expected_after:
            raise HelperError("verify", "alembic_version holds %s after the downgrade, expected %s"
                              % (",".join(after) or "base", ",".join(expected_after) or "base"), current=after)
        return dict(already=False, before=before, after=after, lock=lock,
                    migration_connection="env.py engine" if foreign else "passed connection")
    finally:
        try:
            if lock["acquired"]:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            lock_conn.close()
            engine.dispose()


ACTIONS = dict(state=action_state, sql=action_sql, downgrade=action_downgrade)


def _on_alarm(signum, frame):
    raise HelperTimeout()


def main():
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # env.py and migrations may print; only the result goes to stdout
    out = None
    try:
        args = json.loads(sys.argv[1])
        url = os.environ.get(URL_ENV) or os.environ.get("DATABASE_URL") or ""
        _SECRETS.append(url)
        os.chdir(args["project_dir"])
        if args["project_dir"] not in sys.path:
            sys.path.insert(0, args["project_dir"])
        if args.get("timeout") and hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(int(args["timeout"]))
        load_libs()
        out = dict(ok=True)
        out.update(ACTIONS[args["action"]](args, url))
    except HelperError as exc:
        out = dict(ok=False, kind=exc.kind, message=scrub(exc.message), details=exc.details)
    except HelperTimeout:
        out = dict(ok=False, kind="timeout", message="no result within %ss" % args.get("timeout"), details={})
    except BaseException as exc:
        out = dict(ok=False, kind="unexpected", message=scrub("%s: %s" % (type(exc).__name__, exc)),
                   details=dict(traceback=scrub(traceback.format_exc())))
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
    real_stdout.write("\n" + RESULT_MARK + json.dumps(out, default=str) + "\n")
    real_stdout.flush()
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
'''


# --------------------------------------------------------------------------------------------------
# Inputs: interpreter, configuration, database URL
# --------------------------------------------------------------------------------------------------

def read_env_file(path):
    """Parse a dotenv file (KEY=VALUE, optional ``export``, quotes, comments) into a dict."""
    values = {}
    with open(path) as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, value = line.split("=", 1)
            key, value = key.strip(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            values[key] = value
    return values


def resolve_database_url(params, environ=None):
    """The database URL and where it came from: the option, the app's env_file, or the environment."""
    if params.get("database_url"):
        return params["database_url"], "database_url"
    env_file = params.get("env_file") or os.path.join(params["project_dir"], ".env")
    if os.path.isfile(env_file):
        try:
            url = read_env_file(env_file).get("DATABASE_URL")
        except (IOError, OSError, UnicodeDecodeError) as exc:
            raise InputError("cannot read %s (%s)" % (env_file, exc), verb="read", obj="env_file")
        if url:
            return url, env_file
    environ = os.environ if environ is None else environ
    if environ.get("DATABASE_URL"):
        return environ["DATABASE_URL"], "environment"
    raise InputError("no database_url given, no DATABASE_URL in %s and none in the environment" % env_file,
                     verb="find", obj="the database URL")


def resolve_python(params):
    if params.get("virtualenv"):
        python = os.path.join(params["virtualenv"], "bin", "python")
    else:
        python = params.get("python")
    if not python or not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise InputError("%s does not exist or is not executable" % python, verb="find",
                         obj="the application's Python interpreter")
    return python


def resolve_config(params):
    project_dir = params["project_dir"]
    if not os.path.isdir(project_dir):
        raise InputError("%s is not a directory" % project_dir, verb="find", obj="project_dir")
    config = params.get("config") or os.path.join(project_dir, "alembic.ini")
    if not os.path.isfile(config):
        raise InputError("%s does not exist" % config, verb="find", obj="alembic.ini")
    return config


def helper_argv(python, helper_path, action, args):
    """argv of one helper call. ``args`` never holds the database URL (it travels in the environment)."""
    payload = dict(args)
    payload["action"] = action
    return [python, helper_path, json.dumps(payload, sort_keys=True)]


def helper_env(url):
    return {URL_ENV: url, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def parse_helper_output(stdout):
    """The last result line of the helper, or None."""
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                return json.loads(line[len(RESULT_MARK):])
            except ValueError:
                return None
    return None


_ERRORS = {
    # kind: (exception class, verb, object)
    "missing": (InputError, "use", "the application's Python interpreter"),
    "input": (InputError, "parse", "database_url"),
    "config": (InputError, "read", "alembic.ini"),
    "scripts": (InputError, "load", "the alembic history"),
    "connection": (ConnectionFailure, "connect to", "the database"),
    "lock": (SafetyRefusal, "acquire", "the advisory lock"),
    "changed": (SafetyRefusal, "downgrade", "the database"),
    "mismatch": (SafetyRefusal, "downgrade", "the database"),
    "migration": (CommandFailure, "downgrade", "the database"),
    "verify": (CommandFailure, "verify", "the stamped revision"),
    "sql": (CommandFailure, "render", "the offline SQL"),
    "timeout": (CommandFailure, "finish", "the alembic helper"),
}


def helper_error(result, cmd=None, rc=None, stderr=None):
    exc_class, verb, obj = _ERRORS.get(result.get("kind"), (CommandFailure, "run", "the alembic helper"))
    details = dict(result.get("details") or {})
    return exc_class(result.get("message") or "unknown error", verb=verb, obj=obj, cmd=cmd, rc=rc,
                     stderr=stderr, **details)


class Helper(object):
    """Runs the helper program with the application's interpreter, one JSON answer per call."""

    def __init__(self, module, python, project_dir, config, url, timeout):
        self.module = module
        self.python = python
        self.project_dir = project_dir
        self.config = config
        self.url = url
        self.timeout = timeout
        self.commands = []
        self._path = None

    def _helper_path(self):
        if self._path is None:
            path = os.path.join(self.module.tmpdir, HELPER_NAME)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(HELPER)
            self._path = path
        return self._path

    def call(self, action, **args):
        args.update(project_dir=self.project_dir, config=self.config, timeout=self.timeout)
        argv = helper_argv(self.python, self._helper_path(), action, args)
        self.commands.append(argv)
        rc, out, err = self.module.run_command(argv, cwd=self.project_dir, environ_update=helper_env(self.url))
        result = parse_helper_output(out)
        if result is None:
            raise CommandFailure("%s produced no result (rc=%s)" % (self.python, rc), verb="run",
                                 obj="the alembic helper", cmd=argv, rc=rc, stdout=out, stderr=err)
        if not result.get("ok"):
            raise helper_error(result, cmd=argv, rc=rc, stderr=err)
        return result


# --------------------------------------------------------------------------------------------------
# Planning: target resolution, ancestry, steps, data loss (pure, unit-tested)
# --------------------------------------------------------------------------------------------------

class History(object):
    """The revision graph from the helper's ``history`` list."""

    def __init__(self, revisions):
        self.revisions = dict((r["revision"], r) for r in revisions)
        self.order = [r["revision"] for r in revisions]

    def __contains__(self, rev):
        return rev in self.revisions

    def downs(self, rev):
        return list(self.revisions[rev].get("down_revisions") or [])

    def ancestors(self, rev):
        """``rev`` and every revision below it (an empty set for base/None)."""
        seen = set()
        stack = [rev] if rev else []
        while stack:
            cur = stack.pop()
            if cur in seen or cur not in self.revisions:
                continue
            seen.add(cur)
            stack.extend(self.downs(cur))
        return seen

    def heads_of(self, revs):
        """The members of ``revs`` that are not below another member."""
        revs = set(r for r in revs if r)
        below = set()
        for rev in revs:
            below |= self.ancestors(rev) - set([rev])
        return sorted(revs - below)

    def known(self):
        return sorted(self.revisions)


def _describe_known(history, named_targets):
    names = ", ".join("%s=%s" % (k, v) for k, v in sorted((named_targets or {}).items()))
    return "known revisions: %s; named targets: %s; also base and relative -N" % (
        ", ".join(history.order) or "none", names or "none")


def resolve_revision(history, ref, named_targets=None):
    """A revision id, unique prefix or named target -> the full revision id."""
    named_targets = named_targets or {}
    ref = str(ref).strip()
    if ref in named_targets:
        resolved = str(named_targets[ref])
        if resolved in ("base",):
            return None
        if resolved not in history:
            matches = [r for r in history.known() if r.startswith(resolved)]
            if len(matches) != 1:
                raise InputError("named target %s points at %s, which is not in the history (%s)"
                                 % (ref, resolved, _describe_known(history, named_targets)),
                                 verb="resolve", obj="target %s" % ref)
            return matches[0]
        return resolved
    if ref in history:
        return ref
    matches = [r for r in history.known() if r.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError("%s is ambiguous, it matches %s" % (ref, ", ".join(matches)),
                         verb="resolve", obj="target %s" % ref)
    raise InputError("unknown revision (%s)" % _describe_known(history, named_targets),
                     verb="resolve", obj="target %s" % ref)


def select_current(history, current, heads, branch=None, named_targets=None):
    """The current revision this downgrade starts from (None = base), honouring ``branch``."""
    current = [c for c in current if c]
    for rev in current:
        if rev not in history:
            raise InputError("the database is at %s, which is not in the migration scripts of this project"
                             % rev, verb="plan", obj="the downgrade")
    if len(heads) <= 1 and len(current) <= 1:
        return current[0] if current else None
    if not branch:
        raise InputError("the history has multiple heads (%s) and the database is at %s; set branch to one of "
                         "the heads or branch labels" % (", ".join(heads), ", ".join(current) or "base"),
                         verb="plan", obj="the downgrade")
    labelled = [r for r, info in history.revisions.items() if branch in (info.get("branch_labels") or [])]
    branch_rev = labelled[0] if labelled else resolve_revision(history, branch, named_targets)
    # the branch's line: everything below or above branch_rev that leads to one head
    line_heads = [h for h in heads if branch_rev in history.ancestors(h)]
    line = set()
    for head in line_heads or [branch_rev]:
        line |= history.ancestors(head)
    on_branch = [c for c in current if c in line]
    if len(on_branch) > 1:
        raise InputError("the database has several current revisions on branch %s (%s)"
                         % (branch, ", ".join(on_branch)), verb="plan", obj="the downgrade")
    return on_branch[0] if on_branch else None


def resolve_target(history, current, target, named_targets=None):
    """The target revision id (None for base) of a downgrade from ``current``."""
    text = str(target).strip()
    if text == "base":
        return None
    if text.startswith("-") and text[1:].isdigit():
        steps = int(text[1:])
        if steps < 1:
            raise InputError("a relative target needs at least -1", verb="resolve", obj="target %s" % text)
        rev = current
        for _i in range(steps):
            if rev is None:
                raise InputError("the database is only %d revision(s) above base" % _i, verb="resolve",
                                 obj="target %s" % text)
            downs = history.downs(rev)
            if len(downs) > 1:
                raise InputError("%s is a merge point (%s); name the revision to go to" % (rev, ", ".join(downs)),
                                 verb="resolve", obj="target %s" % text)
            rev = downs[0] if downs else None
        return rev
    if text.startswith("+"):
        raise InputError("%s is an upgrade, not a downgrade" % text, verb="resolve", obj="target %s" % text)
    if text in ("head", "heads"):
        heads = history.heads_of(history.order)
        if len(heads) != 1:
            raise InputError("the history has several heads (%s)" % ", ".join(heads), verb="resolve",
                             obj="target %s" % text)
        return heads[0]
    return resolve_revision(history, text, named_targets)


def plan_steps(history, current, target, applied_heads=None):
    """Ordered downgrade steps from ``current`` to ``target`` (newest first). Raises when not an ancestor.

    ``applied_heads`` are all rows of ``alembic_version`` (several with branches): a revision of another
    branch that depends on a revision this downgrade removes is removed too, as alembic does.
    """
    if target == current:
        return []
    below_current = history.ancestors(current)
    if target is not None and target not in below_current:
        if current is None or current in history.ancestors(target):
            raise InputError("%s is a descendant of the current revision %s (that is an upgrade, not a downgrade)"
                             % (target, current or "base"), verb="plan", obj="the downgrade")
        raise InputError("%s is not an ancestor of the current revision %s" % (target, current),
                         verb="plan", obj="the downgrade")
    remove = below_current - history.ancestors(target)
    applied = set()
    for head in applied_heads or [current]:
        applied |= history.ancestors(head)
    grew = True
    while grew:
        dependants = set(r for r in applied - remove if any(d in remove for d in history.downs(r)))
        grew = bool(dependants)
        remove |= dependants
    steps = []
    while remove:
        # a revision goes before its down revisions: take the ones nothing left depends on
        ready = sorted(r for r in remove if not any(r in history.downs(o) for o in remove if o != r))
        # keep history order (newest first) among equals
        ready.sort(key=lambda r: history.order.index(r) if r in history.order else 0)
        rev = ready[0]
        info = history.revisions[rev]
        downs = history.downs(rev)
        steps.append(dict(revision=rev,
                          down_revision=(downs[0] if len(downs) == 1 else (downs or None)),
                          message=info.get("message") or "",
                          drops_data=info.get("drops_data"),
                          additive=bool(info.get("additive"))))
        remove.discard(rev)
    return steps


def expected_after(history, current_heads, steps, target):
    removed = set(s["revision"] for s in steps)
    remaining = set(current_heads) - removed
    if target:
        remaining.add(target)
    return history.heads_of(remaining)


def dropping_steps(steps):
    """Steps that drop data; an undeclared ``downgrade_drops_data`` (None) counts as dropping."""
    return [s for s in steps if s.get("drops_data") is None or s.get("drops_data")]


def describe_dropping(steps):
    return "; ".join("%s drops %s" % (s["revision"], ", ".join(s["drops_data"]) if s["drops_data"] is not None
                                      else "unknown data (no downgrade_drops_data declared)") for s in steps)


def _table_name(name):
    return name.split(".")[-1].strip('"')


def check_manifest(manifest, database, current, steps=None):
    """A verified pg_backup manifest must be of this database, taken at the current revision and, when it
    holds only some tables, hold every table whose data the dropping steps destroy."""
    problems = []
    options = manifest.get("options") or {}
    included = set(_table_name(t) for t in (options.get("tables") or manifest.get("tables_included") or []))
    if included:
        for step in dropping_steps(steps or []):
            if step.get("drops_data") is None:
                problems.append("it holds only the tables %s and %s does not declare what it drops"
                                % (", ".join(sorted(included)), step["revision"]))
                continue
            missing = sorted(set(d.split(".")[0] for d in step["drops_data"]) - included)
            if missing:
                problems.append("it does not hold %s, whose data %s drops" % (", ".join(missing), step["revision"]))
    if manifest.get("database") != database:
        problems.append("it is a backup of database %r, not %r" % (manifest.get("database"), database))
    if manifest.get("alembic_revision") != current:
        problems.append("it was taken at revision %s, the database is at %s"
                        % (manifest.get("alembic_revision") or "unknown", current or "base"))
    if problems:
        raise SafetyRefusal("; ".join(problems), verb="accept", obj="backup_manifest")


def decide_data_loss(steps, manifest_info, allow_data_loss):
    """(allowed_by, dropping) - allowed_by is None/'backup_manifest'/'allow_data_loss'."""
    dropping = dropping_steps(steps)
    if not dropping:
        return None, dropping
    if manifest_info:
        return "backup_manifest", dropping
    if allow_data_loss:
        return "allow_data_loss", dropping
    return False, dropping


def manifest_from_data(data):
    """A manifest handed over by the caller (verified on the host that keeps the backup)."""
    missing = [key for key in ("sha256", "database", "path") if not data.get(key)]
    if missing:
        raise SafetyRefusal("it is not a pg_backup manifest (no %s)" % ", ".join(missing), verb="accept",
                            obj="backup_manifest_data")
    if data.get("verified") is not True:
        raise SafetyRefusal("the backup it describes was not verified (verified: %r; pg_backup verifies every "
                            "backup it writes)" % data.get("verified"), verb="accept", obj="backup_manifest_data")
    return dict(data)


def _verify_manifest(path):
    try:
        from ansible_collections.replyx.rollback.plugins.module_utils._manifest import verify_manifest
    except ImportError as exc:  # pragma: no cover - the manifest support ships with the collection
        raise InputError("manifest support is not available (%s)" % exc, verb="verify", obj="backup_manifest")
    return verify_manifest(path)


def _revision_text(rev):
    return "revision: %s\n" % (rev or "base")


# --------------------------------------------------------------------------------------------------
# The service main() calls
# --------------------------------------------------------------------------------------------------

def run_downgrade(module, verify_manifest=None):
    """Plan and (unless check mode) run the downgrade. Returns the result dict for exit_json."""
    started = time.monotonic()
    params = module.params
    config = resolve_config(params)
    python = resolve_python(params)
    url, url_source = resolve_database_url(params)
    module.no_log_values.add(url)
    settings = _parse_url(url)
    if settings.get("login_password"):
        module.no_log_values.add(settings["login_password"])
    helper = Helper(module, python, params["project_dir"], config, url, params["timeout"])
    result = dict(changed=False, database_url_source=url_source, commands=helper.commands)

    state = helper.call("state")
    history = History(state["history"])
    named = params.get("named_targets") or {}
    current = select_current(history, state["current"], state["heads"], params.get("branch"), named)
    target = resolve_target(history, current, params["target"], named)
    steps = plan_steps(history, current, target, state["current"])
    after = expected_after(history, state["current"], steps, target)
    result.update(before=current, after=current, target=target, current_heads=state["current"],
                  heads=state["heads"], steps=steps, would_drop_data=bool(dropping_steps(steps)),
                  alembic_version=state.get("alembic_version"), python=python, lock=None)

    manifest_info = None
    if (params.get("backup_manifest") or params.get("backup_manifest_data")) and steps:
        if params.get("backup_manifest"):
            manifest = (verify_manifest or _verify_manifest)(params["backup_manifest"])
            manifest_path = params["backup_manifest"]
        else:
            manifest = manifest_from_data(params["backup_manifest_data"])
            manifest_path = manifest.get("manifest_path") or manifest.get("path")
        check_manifest(manifest, settings.get("login_db"), current, steps)
        manifest_info = dict(path=manifest_path, sha256=manifest.get("sha256"),
                             database=manifest.get("database"), alembic_revision=manifest.get("alembic_revision"),
                             created=manifest.get("created"))
    result["backup_manifest"] = manifest_info
    allowed_by, dropping = decide_data_loss(steps, manifest_info, params.get("allow_data_loss"))
    result["data_loss"] = dict(steps=[s["revision"] for s in dropping], allowed_by=allowed_by or None)
    result["refused_without_backup"] = None
    if allowed_by is False:
        refusal = SafetyRefusal("%s; give backup_manifest (a verified pg_backup manifest taken at %s) or set "
                                "allow_data_loss=true" % (describe_dropping(dropping), current or "base"),
                                verb="downgrade", obj="the database")
        if not module.check_mode:
            raise refusal
        if params.get("backup_planned"):
            result["refused_without_backup"] = refusal.msg  # the caller's plan takes the backup first
        else:
            module.warn("a real run would be refused: %s" % refusal.msg)
    elif allowed_by == "allow_data_loss":
        module.warn("allow_data_loss=true: running steps that drop data without a backup manifest: %s"
                    % describe_dropping(dropping))

    if module._diff:
        result["diff"] = dict(before=_revision_text(current), after=_revision_text(target if steps else current))
    if not steps:
        result["duration_s"] = round(time.monotonic() - started, 3)
        return result

    destination = target or "base"
    if len(state["heads"]) > 1 and params.get("branch"):
        destination = "%s@%s" % (params["branch"], destination)
    if params.get("sql_preview"):
        result["sql"] = helper.call("sql", start=current, destination=target or "base")["sql"]

    if module.check_mode:
        result.update(changed=True, after=target)
        result["duration_s"] = round(time.monotonic() - started, 3)
        return result

    done = helper.call("downgrade", destination=destination, expected_current=state["current"],
                       expected_after=after, lock_id=params["lock_id"], lock_timeout=params["lock_timeout"])
    result["lock"] = done.get("lock")
    result["migration_connection"] = done.get("migration_connection")
    result["current_heads"] = done["after"]
    if done.get("already"):
        # another run got there while this one waited for the lock
        module.warn("the database reached %s while waiting for the lock; nothing was done" % (target or "base"))
        result.update(before=target, after=target, steps=[], would_drop_data=False)
        if "diff" in result:
            result["diff"]["before"] = result["diff"]["after"]
    else:
        result.update(changed=True, after=target)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result
