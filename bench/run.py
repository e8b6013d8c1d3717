#!/usr/bin/env python3
"""Backup/restore benchmark: replyx.rollback.pg_backup / pg_restore against the plan's own commands.

    make bench                                   # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --scale 5 --repeat 1     # a quick run (about a minute)

One throwaway PostgreSQL 18 + pgvector (tests/pgserver.py, 127.0.0.1 on the first free port of
PORT_RANGE = 55800-55899, data in /tmp), the lab backend's
schema (alembic upgrade head) and data (scripts/seed.py --scale N) in a database ``chatai`` owned by the
role ``chatai``. On that one database, in one process, each measurement is repeated --repeat times in a
rotating order and the medians are compared:

  backup   plan        pg_dump $DATABASE_URL > file.sql             (the plan's command, plain SQL)
           bare        pg_dump -Fd -j J -f dir                      (what pg_backup wraps)
           pg_backup   ansible localhost -m replyx.rollback.pg_backup (directory, jobs J; row_counts exact
                       (the default, the headline) and none); its own seconds come from the module's
                       ``timings.total_s``, the rest of the task's time is ansible's start-up and module load
           (bare and pg_backup with --compress (default none) for the headline, and once more each
           with pg_dump's default compression, gzip)
           ping        ansible localhost -m ansible.builtin.ping    (ansible's own start-up cost)
  restore  plan        terminate sessions, dropdb, createdb, CREATE EXTENSION vector, psql chatai < file.sql
                       (the plan exactly as written: the server's maintenance_work_mem)
           plan + mem  the same with PGOPTIONS='-c maintenance_work_mem=M' in the operator's environment, M =
                       pg_restore's default (the same memory the module gives its sessions: a fair comparison)
           pg_restore  ansible localhost -m replyx.rollback.pg_restore (full, jobs J, confirm, no forensic
                       backup; maintenance_work_mem not passed, so the module's default M applies; one extra
                       run with the forensic backup on)

Once: pg_restore with the forensic backup on, and a bare pg_restore -j J by section (with the module's
PGOPTIONS) plus a REINDEX of the hnsw index with the server's and with the module's maintenance_work_mem
(where restore time goes). The load average is sampled before every round and restore. Plus the parts of pg_backup's own work beyond pg_dump (pg_restore --list, sha256 of the directory, exact
row counts in one snapshot), each timed alone on the bare dump. After every restore (not timed) the
database is checked against the seeded one (row count of every table, number of indexes) and vacuumed
(FREEZE, ANALYZE), so every backup reads the same state. Results: bench/results/<UTC stamp>.json and a
table on stdout. Timings on a shared machine are noisy; the ratios within one run are what counts.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "collection"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.pgserver import PgServer, embedded_bin_dir  # noqa: E402
from ansible_collections.replyx.rollback.plugins.module_utils._restore import (  # noqa: E402
    restore_argument_spec, restore_session_options)

# pg_restore's default maintenance_work_mem (the bench never passes the option, so this is what the module's
# restore sessions get through PGOPTIONS); the plan's restore is measured once more with the same PGOPTIONS.
RESTORE_MWM = restore_argument_spec()["maintenance_work_mem"]["default"]
RESTORE_PGOPTIONS = restore_session_options(RESTORE_MWM)

VENV_BIN = ROOT / ".venv" / "bin"
APP_SRC = ROOT / "lab" / "app" / "backend"
RESULTS_DIR = ROOT / "bench" / "results"
APP_USER = "chatai"
APP_DB = "chatai"
APP_PASSWORD = "bench-chatai-pw-1"
# The throwaway server's port: the first free one of this fixed range (documented in bench/README.md), never
# an ephemeral port, so it cannot collide with the labs (55432, 55442, 55452, ...) nor be mistaken for one.
PORT_RANGE = range(55800, 55900)


def bench_port() -> int:
    """The first port of PORT_RANGE nothing listens on (127.0.0.1)."""
    for port in PORT_RANGE:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BenchError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1} on 127.0.0.1")


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------
# running and timing commands

@dataclass
class Run:
    argv: list
    seconds: float
    rc: int
    stdout: str
    stderr: str
    maxrss_kb: int  # largest resident set of the process and its waited-for descendants (wait4)


def clean_env(**extra) -> dict:
    """The environment without libpq variables or DATABASE_URL, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(argv, *, env, cwd=None, stdin_path=None, stdout_path=None, check=True) -> Run:
    """Run argv (no shell), timed; stdout to ``stdout_path`` (a shell redirect) or captured."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as cap:
        out = open(stdout_path, "wb") if stdout_path else cap
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if stdout_path:
                out.close()
            if stdin_path:
                stdin.close()
        cap.seek(0)
        err.seek(0)
        result = Run(argv, seconds, proc.returncode, cap.read().decode("utf-8", "replace"),
                     err.read().decode("utf-8", "replace"), usage.ru_maxrss)
    if check and result.rc != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... failed rc={result.rc}\n{result.stderr[-3000:]}\n"
                         f"{result.stdout[-3000:]}")
    return result


def median(values):
    return round(statistics.median(values), 3) if values else None


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.jobs = args.jobs
        self.bin_dir = embedded_bin_dir()
        self.work = Path(tempfile.mkdtemp(prefix="replyx-bench-", dir="/tmp"))
        self.server: PgServer | None = None
        self.times: dict[str, list[float]] = {}
        self.rss: dict[str, list[int]] = {}
        self.notes: dict = {}

    # -- helpers
    def pg(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def port(self) -> int:
        return self.server.port

    def app_env(self, **extra) -> dict:
        return clean_env(PGPASSWORD=APP_PASSWORD, **extra)

    def su_env(self, **extra) -> dict:
        return clean_env(PGPASSWORD=self.server.password, **extra)

    def sample_load(self, label: str):
        self.notes.setdefault("load_avg_samples", []).append([label] + [round(x, 2) for x in os.getloadavg()])

    def record(self, name: str, r: Run) -> float:
        self.times.setdefault(name, []).append(round(r.seconds, 3))
        self.rss.setdefault(name, []).append(r.maxrss_kb)
        return r.seconds

    def sql(self, query: str, db=APP_DB) -> str:
        return self.server.psql(query, dbname=db)

    def ansible(self, module: str, args: dict) -> tuple[Run, dict]:
        argv = [VENV_BIN / "ansible", "localhost", "-m", module, "-e", f"@{self.vars_file}"]
        if args:
            argv += ["-a", json.dumps(args)]
        env = clean_env(ANSIBLE_CONFIG=ROOT / "ansible.cfg", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_DEPRECATION_WARNINGS="False")
        r = run(argv, env=env, cwd=ROOT, check=False)
        try:
            result = json.loads(r.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            raise BenchError(f"{module}: no JSON result (rc={r.rc})\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        if r.rc != 0 or result.get("failed"):
            raise BenchError(f"{module} failed: {result.get('msg')}\n{r.stderr[-2000:]}")
        return r, result

    # -- set-up
    def setup(self):
        t0 = time.perf_counter()
        self.server = PgServer(self.bin_dir, port=bench_port(),
                               root=Path(tempfile.mkdtemp(prefix="replyx-bench-pg-", dir="/tmp")),
                               archive=False).start()
        self.notes["port"] = self.server.port
        self.server.wait_ready()
        self.sql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'", db="postgres")
        self.sql(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}", db="postgres")
        # pgvector is not a trusted extension: the DBA creates it, as in the lab.
        self.sql("CREATE EXTENSION IF NOT EXISTS vector")
        self.url = f"postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{self.port}/{APP_DB}"
        self.url_nopw = f"postgresql://{APP_USER}@127.0.0.1:{self.port}/{APP_DB}"
        self.vars_file = self.work / "vars.json"
        self.vars_file.write_text(json.dumps({"bench_app_pw": APP_PASSWORD, "bench_su_pw": self.server.password}))
        os.chmod(self.vars_file, 0o600)

        app = self.work / "backend"
        shutil.copytree(APP_SRC, app, ignore=shutil.ignore_patterns("__pycache__", ".env", "*.log"))
        (app / ".env").write_text(f"DATABASE_URL={self.url}\n")
        env = clean_env(PYTHONDONTWRITEBYTECODE="1", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
        run([VENV_BIN / "alembic", "upgrade", "head"], env=env, cwd=app)
        t_seed = time.perf_counter()
        seed = run([VENV_BIN / "python", "scripts/seed.py", "--scale", self.args.scale], env=env, cwd=app)
        self.notes["seed_s"] = round(time.perf_counter() - t_seed, 1)
        self.notes["seed_summary"] = json.loads(seed.stdout.strip().splitlines()[-1])
        self.settle()
        self.reference = self.state()
        self.notes["setup_s"] = round(time.perf_counter() - t0, 1)
        size = int(self.sql(f"SELECT pg_database_size('{APP_DB}')"))
        self.notes["database_size_bytes"] = size
        self.notes["database_size"] = self.sql(f"SELECT pg_size_pretty(pg_database_size('{APP_DB}'))")
        self.notes["largest_relations"] = [
            line.split("|") for line in self.sql(
                "SELECT c.relname, c.relkind, pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r') "
                "ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 4").splitlines()]
        self.notes["hnsw_indexes"] = self.sql(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexdef LIKE '%USING hnsw%'")

    def settle(self):
        """Same physical state before every backup: hint bits set, statistics fresh, a checkpoint."""
        self.sql("VACUUM (FREEZE, ANALYZE)")
        self.sql("CHECKPOINT")

    def state(self) -> dict:
        tables = self.sql("SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables "
                          "ORDER BY 1").splitlines()
        counts = {t: int(self.sql(f"SELECT count(*) FROM {t}")) for t in tables}
        indexes = int(self.sql("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"))
        return dict(counts=counts, indexes=indexes)

    def check_restored(self, what: str):
        got = self.state()
        if got != self.reference:
            raise BenchError(f"{what}: the restored database differs from the seeded one: {got} != {self.reference}")
        self.settle()

    # -- backups
    def plan_backup(self, out: Path) -> float:
        """pg_dump $DATABASE_URL > file.sql (the password in PGPASSWORD instead of the URL)."""
        r = run([self.pg("pg_dump"), self.url_nopw], env=self.app_env(), stdout_path=out)
        self.notes["plan_sql_bytes"] = du(out)
        return self.record("backup.plan_pg_dump_sql", r)

    def bare_backup(self, out: Path, compress: str | None) -> float:
        """pg_dump -Fd -j J; ``compress`` None = pg_dump's default (gzip)."""
        argv = [self.pg("pg_dump"), "-Fd", "-j", self.jobs, "-f", out]
        if compress:
            argv.append(f"--compress={compress}")
        r = run(argv + [self.url_nopw], env=self.app_env())
        suffix = "" if compress else "_default_gzip"
        self.notes[f"directory_bytes{suffix}"] = du(out)
        return self.record(f"backup.bare_pg_dump_Fd{suffix}", r)

    def module_backup(self, dest: Path, row_counts: str, compress: str | None) -> dict:
        args = dict(login_host="127.0.0.1", login_port=self.port, login_user=APP_USER,
                    login_password="{{ bench_app_pw }}", login_db=APP_DB, pg_bin_dir=str(self.bin_dir),
                    kind="logical", format="directory", jobs=self.jobs, row_counts=row_counts, dest=str(dest))
        if compress:
            args["compress"] = compress
        r, result = self.ansible("replyx.rollback.pg_backup", args)
        if not result["backup"].get("verified"):
            raise BenchError("pg_backup returned an unverified backup")
        name = f"backup.pg_backup_{row_counts}" + ("" if compress else "_default_gzip")
        self.record(name, r)
        timings = result.get("timings") or {}
        # The module's own seconds (its timings.total_s: connection, dump, verification, counts, checksum,
        # manifest); the rest of the task's time is ansible's start-up, the module's load and exit.
        own = timings.get("total_s", result["backup"]["duration_s"])
        self.times.setdefault(f"{name}.in_module", []).append(own)
        self.times.setdefault(f"{name}.start_up", []).append(round(r.seconds - own, 3))
        for key, value in timings.items():
            if key != "total_s":
                self.times.setdefault(f"{name}.step.{key}", []).append(value)
        return result

    def ping(self):
        r, dummy = self.ansible("ansible.builtin.ping", {})
        self.record("ansible.ping", r)

    def parts(self, directory: Path):
        """pg_backup's work beyond pg_dump, each part timed alone on a bare pg_dump -Fd directory."""
        from ansible_collections.replyx.rollback.plugins.module_utils._backup import (  # noqa: PLC0415
            make_private, parse_toc, toc_tables)
        from ansible_collections.replyx.rollback.plugins.module_utils._manifest import (  # noqa: PLC0415
            files_digest, hash_files, sha256_path)
        import psycopg  # noqa: PLC0415
        from psycopg import sql as psql_sql  # noqa: PLC0415

        r = run([self.pg("pg_restore"), "--list", directory], env=self.app_env())
        self.record("part.pg_restore_list", r)
        tables = toc_tables(parse_toc(r.stdout))
        t0 = time.perf_counter()
        sha256_path(str(directory))
        self.times.setdefault("part.sha256_directory", []).append(round(time.perf_counter() - t0, 3))
        t0 = time.perf_counter()
        files_digest(hash_files(str(directory)))
        self.times.setdefault("part.sha256_files_parallel", []).append(round(time.perf_counter() - t0, 3))
        t0 = time.perf_counter()
        make_private(str(directory))
        self.times.setdefault("part.chmod_private", []).append(round(time.perf_counter() - t0, 3))
        t0 = time.perf_counter()
        with psycopg.connect(self.url) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for table in tables:
                schema, rel = table.split(".", 1)
                conn.execute(psql_sql.SQL("SELECT count(*) FROM {}").format(psql_sql.Identifier(schema, rel)))
            conn.rollback()
        self.times.setdefault("part.row_counts_exact", []).append(round(time.perf_counter() - t0, 3))
        r = run([self.pg("pg_dump"), "--version"], env=self.app_env())
        self.record("part.tool_version", r)

    # -- restores
    def plan_restore(self, sql_file: Path, pgoptions: str | None = None) -> float:
        """The plan's restore, as the operator (superuser): terminate, dropdb, createdb, extension, psql < file.
        ``pgoptions``: PGOPTIONS in the operator's environment (None = the plan exactly as written)."""
        self.sample_load("restore.plan" + (" + PGOPTIONS" if pgoptions else ""))
        name = "restore.plan_psql_sql" + ("_mwm" if pgoptions else "")
        su = self.su_env(**({"PGOPTIONS": pgoptions} if pgoptions else {}))
        conn = ["-h", "127.0.0.1", "-p", self.port, "-U", "postgres"]
        steps = [
            run([self.pg("psql"), "-X", *conn, "-d", APP_DB, "-c",
                 f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{APP_DB}' "
                 "AND pid <> pg_backend_pid();"], env=su),
            run([self.pg("dropdb"), *conn, APP_DB], env=su),
            # createdb as the operator; -O keeps the app role the owner (pg_restore keeps the owner too)
            run([self.pg("createdb"), *conn, "-O", APP_USER, APP_DB], env=su),
            run([self.pg("psql"), "-X", *conn, "-d", APP_DB, "-c", "CREATE EXTENSION IF NOT EXISTS vector;"], env=su),
        ]
        load = run([self.pg("psql"), "-X", *conn, APP_DB], env=su, stdin_path=sql_file)
        errors = [line for line in load.stderr.splitlines() if "ERROR" in line]
        self.notes.setdefault(f"{name}.error_lines", []).append(len(errors))
        if errors:
            self.notes.setdefault(f"{name}.errors_sample", errors[:5])
        total = sum(s.seconds for s in steps) + load.seconds
        self.times.setdefault(name, []).append(round(total, 3))
        self.times.setdefault(f"{name}.load_only", []).append(round(load.seconds, 3))
        self.rss.setdefault(name, []).append(load.maxrss_kb)
        self.check_restored(name)
        return total

    def module_restore(self, manifest: str, forensic: bool = False) -> dict:
        """maintenance_work_mem is deliberately not passed: the module's default applies (RESTORE_MWM)."""
        self.sample_load("restore.pg_restore" + (" forensic" if forensic else ""))
        args = dict(login_host="127.0.0.1", login_port=self.port, login_user="postgres",
                    login_password="{{ bench_su_pw }}", login_db="postgres", pg_bin_dir=str(self.bin_dir),
                    backup=manifest, mode="full", target_database=APP_DB, jobs=self.jobs, confirm=True,
                    forensic_backup=forensic)
        if forensic:
            args["forensic_dest"] = str(self.work / "forensic")
        r, result = self.ansible("replyx.rollback.pg_restore", args)
        name = "restore.pg_restore_forensic" if forensic else "restore.pg_restore"
        self.record(name, r)
        self.check_restored(name)
        return result

    def restore_sections(self, directory: str):
        """Where a restore's time goes: bare pg_restore -j J by section into a fresh database (once), with the
        PGOPTIONS pg_restore gives its own sessions."""
        self.sample_load("restore.sections")
        su = self.su_env(PGOPTIONS=RESTORE_PGOPTIONS)
        conn = ["-h", "127.0.0.1", "-p", self.port, "-U", "postgres"]
        run([self.pg("dropdb"), *conn, "--force", APP_DB], env=su)
        run([self.pg("createdb"), *conn, "-O", APP_USER, APP_DB], env=su)
        run([self.pg("psql"), "-X", *conn, "-d", APP_DB, "-c", "CREATE EXTENSION IF NOT EXISTS vector;"], env=su)
        for section in ("pre-data", "data", "post-data"):
            r = run([self.pg("pg_restore"), *conn, "-d", APP_DB, "--exit-on-error", "-j", self.jobs,
                     f"--section={section}", directory], env=su)
            self.record(f"restore.bare_pg_restore_section.{section}", r)
        self.notes["hnsw_reindex"] = self.hnsw_build_time()
        self.notes["hnsw_reindex_module_mwm"] = self.hnsw_build_time(RESTORE_MWM)
        self.check_restored("bare pg_restore by section")

    def hnsw_build_time(self, mwm: str | None = None) -> dict | None:
        """Seconds to build the largest hnsw index alone (REINDEX), for the post-data share; ``mwm`` = a
        maintenance_work_mem for that session (None = the server's)."""
        index = self.sql("SELECT i.indexrelid::regclass FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                         "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'hnsw' "
                         "ORDER BY pg_relation_size(i.indexrelid) DESC LIMIT 1")
        if not index:
            return None
        setting = f"SET maintenance_work_mem = '{mwm}'; " if mwm else ""
        t0 = time.perf_counter()
        self.sql(f"{setting}REINDEX INDEX {index}")
        return {"index": index, "seconds": round(time.perf_counter() - t0, 2),
                "maintenance_work_mem": mwm or self.sql("SHOW maintenance_work_mem", db="postgres")}

    # -- the rounds
    def measure(self):
        for rnd in range(self.args.repeat):
            rdir = self.work / f"round{rnd}"
            rdir.mkdir()
            sql_file, bare_dir, bare_gz = rdir / "plan.sql", rdir / "bare.dir", rdir / "bare-gzip.dir"
            comp = self.args.compress
            results = {}
            self.sample_load(f"round {rnd + 1}")
            self.ping()
            backups = [
                ("plan", lambda: self.plan_backup(sql_file)),
                ("bare", lambda: self.bare_backup(bare_dir, comp)),
                ("pg_backup exact", lambda: results.__setitem__(
                    "exact", self.module_backup(rdir / "exact", "exact", comp))),
                # bare once more between the two pg_backup runs: the reference alternates with the module
                ("bare again", lambda: self.bare_backup(rdir / "bare2.dir", comp)),
                ("pg_backup none", lambda: results.__setitem__(
                    "none", self.module_backup(rdir / "none", "none", comp))),
                ("bare gzip", lambda: self.bare_backup(bare_gz, None)),
                ("pg_backup exact gzip", lambda: self.module_backup(rdir / "exact-gzip", "exact", None)),
            ]
            order = backups[rnd % len(backups):] + backups[:rnd % len(backups)]
            print(f"round {rnd + 1}/{self.args.repeat}: backups ({', '.join(n for n, _ in order)})", flush=True)
            for dummy, fn in order:
                fn()
            self.parts(bare_dir)
            for path in (bare_dir, rdir / "bare2.dir", bare_gz, rdir / "none", rdir / "exact-gzip"):
                shutil.rmtree(path)
            if self.args.backup_only:
                shutil.rmtree(rdir)
                continue
            manifest = results["exact"]["manifest_path"]
            restores = [("plan", lambda: self.plan_restore(sql_file)),
                        ("pg_restore", lambda: self.module_restore(manifest)),
                        ("plan + PGOPTIONS", lambda: self.plan_restore(sql_file, RESTORE_PGOPTIONS))]
            restores = restores[rnd % len(restores):] + restores[:rnd % len(restores)]
            print(f"round {rnd + 1}/{self.args.repeat}: restores ({', '.join(n for n, _ in restores)})", flush=True)
            for dummy, fn in restores:
                fn()
            if rnd == self.args.repeat - 1:
                print("forensic: one pg_restore with forensic_backup on", flush=True)
                result = self.module_restore(manifest, forensic=True)
                self.notes["forensic_backup_bytes"] = (result.get("forensic_backup") or {}).get("size_bytes")
                print("sections: a bare pg_restore -j J, pre-data / data / post-data timed apart", flush=True)
                self.restore_sections(result["backup"]["path"])
            shutil.rmtree(rdir)

    # -- report
    def report(self) -> dict:
        med = {k: median(v) for k, v in sorted(self.times.items())}
        fastest = min(("exact", "none"), key=lambda rc: med[f"backup.pg_backup_{rc}"])
        ping = med["ansible.ping"]
        pgb = med[f"backup.pg_backup_{fastest}"]
        pgb_exact = med["backup.pg_backup_exact"]
        bare = med["backup.bare_pg_dump_Fd"]
        own_exact = med["backup.pg_backup_exact.in_module"]
        own_none = med["backup.pg_backup_none.in_module"]
        ratios = {
            "plan_over_replyx_backup": round(med["backup.plan_pg_dump_sql"] / pgb, 2),
            "pg_backup_over_bare_pg_dump_Fd": round(pgb / bare, 3),
            "pg_backup_without_ansible_start_over_bare_pg_dump_Fd": round((pgb - ping) / bare, 3),
            "pg_backup_exact_over_bare_pg_dump_Fd": round(pgb_exact / bare, 3),
            "pg_backup_exact_without_ansible_start_over_bare_pg_dump_Fd": round((pgb_exact - ping) / bare, 3),
            # the module's own seconds (timings.total_s), start-up excluded exactly rather than by ping
            "pg_backup_exact_in_module_over_bare_pg_dump_Fd": round(own_exact / bare, 3),
            "pg_backup_none_in_module_over_bare_pg_dump_Fd": round(own_none / bare, 3),
            "default_gzip.pg_backup_exact_over_bare_pg_dump_Fd": round(
                med["backup.pg_backup_exact_default_gzip"] / med["backup.bare_pg_dump_Fd_default_gzip"], 3),
            "default_gzip.pg_backup_exact_in_module_over_bare_pg_dump_Fd": round(
                med["backup.pg_backup_exact_default_gzip.in_module"] / med["backup.bare_pg_dump_Fd_default_gzip"], 3),
            "default_gzip.plan_over_pg_backup_exact": round(
                med["backup.plan_pg_dump_sql"] / med["backup.pg_backup_exact_default_gzip"], 2),
        }
        aims = {
            "pg_backup_within_5pct_of_bare": ratios["pg_backup_over_bare_pg_dump_Fd"] <= 1.05,
            "pg_backup_in_module_within_10pct_of_bare": ratios["pg_backup_exact_in_module_over_bare_pg_dump_Fd"] <= 1.10,
        }
        if not self.args.backup_only:
            plan_total = med["backup.plan_pg_dump_sql"] + med["restore.plan_psql_sql"]
            plan_mwm_total = med["backup.plan_pg_dump_sql"] + med["restore.plan_psql_sql_mwm"]
            ours_total = pgb + med["restore.pg_restore"]
            ratios.update({
                "plan_over_replyx_backup_plus_restore": round(plan_total / ours_total, 2),
                "plan_over_replyx_backup_plus_restore_without_ansible_start": round(
                    plan_total / (ours_total - 2 * ping), 2),
                "plan_over_replyx_restore": round(med["restore.plan_psql_sql"] / med["restore.pg_restore"], 2),
                "plan_same_mem_over_replyx_backup_plus_restore": round(plan_mwm_total / ours_total, 2),
                "plan_same_mem_over_replyx_backup_plus_restore_without_ansible_start": round(
                    plan_mwm_total / (ours_total - 2 * ping), 2),
                "plan_same_mem_over_replyx_restore": round(
                    med["restore.plan_psql_sql_mwm"] / med["restore.pg_restore"], 2),
                "plan_over_plan_same_mem_restore": round(
                    med["restore.plan_psql_sql"] / med["restore.plan_psql_sql_mwm"], 2),
                "forensic_restore_over_restore": round(
                    med["restore.pg_restore_forensic"] / med["restore.pg_restore"], 2),
            })
            aims.update({
                "backup_plus_restore_at_least_2x": ratios["plan_over_replyx_backup_plus_restore"] >= 2.0,
                "backup_plus_restore_at_least_2x_against_plan_with_same_mem":
                    ratios["plan_same_mem_over_replyx_backup_plus_restore"] >= 2.0,
            })
        step = "backup.pg_backup_exact.step."
        breakdown = {
            "pg_backup_exact_total (ansible task)": pgb_exact,
            "bare_pg_dump_Fd": bare,
            "extra_over_bare": round(pgb_exact - bare, 3),
            "start-up (task - module's total_s)": med["backup.pg_backup_exact.start_up"],
            "ansible start-up alone (ping)": ping,
            "in module (timings.total_s)": own_exact,
            "in module - bare pg_dump": round(own_exact - bare, 3),
            "module: connect, facts, snapshot": med.get(step + "connect_s"),
            "module: pg_dump": med.get(step + "dump_s"),
            "module: pg_restore --list (hash running)": med.get(step + "verify_s"),
            "module: exact row counts (hash running)": med.get(step + "row_counts_s"),
            "module: hashing threads, whole": med.get(step + "checksum_s"),
            "module: waited for the hash after verify + counts": med.get(step + "checksum_wait_s"),
            "alone: pg_restore --list": med["part.pg_restore_list"],
            "alone: sha256 of the directory, one stream (old)": med["part.sha256_directory"],
            "alone: sha256 per file, parallel threads (new)": med["part.sha256_files_parallel"],
            "alone: exact row counts": med["part.row_counts_exact"],
            "alone: chmod 0600/0700 walk (old)": med["part.chmod_private"],
            "alone: pg_dump --version": med["part.tool_version"],
        }
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        return dict(
            created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            args=dict(scale=self.args.scale, repeat=self.args.repeat, jobs=self.jobs, compress=self.args.compress,
                      backup_only=self.args.backup_only,
                      also_measured="pg_dump's default compression (gzip) for bare pg_dump -Fd and pg_backup exact"),
            machine=dict(cpus=os.cpu_count(), cpu=cpu, mem_gb=round(os.sysconf("SC_PAGE_SIZE") *
                         os.sysconf("SC_PHYS_PAGES") / 2**30, 1), load_avg_end=os.getloadavg(),
                         load_avg_1min_range=[min(s[1] for s in self.notes["load_avg_samples"]),
                                              max(s[1] for s in self.notes["load_avg_samples"])],
                         python=platform.python_version(), kernel=platform.release(),
                         note="shared machine: other engineers run tests on it at the same time, so absolute "
                              "timings are noisy; the ratios within one run are what counts"),
            postgres=dict(version=self.sql("SHOW server_version", db="postgres"),
                          pg_dump=run([self.pg("pg_dump"), "--version"], env=clean_env()).stdout.strip(),
                          settings={k: self.sql(f"SHOW {k}", db="postgres") for k in (
                              "shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers",
                              "fsync")},
                          pg_restore_maintenance_work_mem=dict(
                              value=RESTORE_MWM, source="replyx.rollback.pg_restore default (not passed by the bench)",
                              pgoptions=RESTORE_PGOPTIONS,
                              plan_same_mem_pgoptions=RESTORE_PGOPTIONS)),
            database=dict(self.notes, tables=self.reference["counts"], indexes=self.reference["indexes"]),
            headline_row_counts=fastest,
            medians_s=med, runs_s=self.times,
            peak_rss_kb={k: max(v) for k, v in self.rss.items() if v},
            ratios=ratios, aims_met=aims, pg_backup_breakdown_s=breakdown,
        )

    def cleanup(self):
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def print_report(res: dict):
    m, db = res["medians_s"], res["database"]
    rss = res["peak_rss_kb"]
    print()
    print(f"database chatai: {db['database_size']} (scale {res['args']['scale']}), "
          f"jobs {res['args']['jobs']}, repeat {res['args']['repeat']}, {res['machine']['cpus']} CPUs, "
          f"load at end {', '.join('%.1f' % x for x in res['machine']['load_avg_end'])}, 1-min load during the run "
          f"{res['machine']['load_avg_1min_range'][0]:.1f}-{res['machine']['load_avg_1min_range'][1]:.1f}")
    mwm = res["postgres"]["pg_restore_maintenance_work_mem"]
    print(f"server maintenance_work_mem {res['postgres']['settings']['maintenance_work_mem']}; pg_restore's "
          f"{mwm['value']} ({mwm['source']}); plan + mem: PGOPTIONS='{mwm['plan_same_mem_pgoptions']}'")
    rows = [
        ("backup", "plan: pg_dump $DATABASE_URL > file.sql", "backup.plan_pg_dump_sql"),
        ("backup", "bare: pg_dump -Fd -j J", "backup.bare_pg_dump_Fd"),
        ("backup", "pg_backup (row_counts exact), ansible task", "backup.pg_backup_exact"),
        ("backup", "  its own time (timings.total_s)", "backup.pg_backup_exact.in_module"),
        ("backup", "  start-up (task - own time)", "backup.pg_backup_exact.start_up"),
        ("backup", "pg_backup (row_counts none), ansible task", "backup.pg_backup_none"),
        ("backup", "  its own time (timings.total_s)", "backup.pg_backup_none.in_module"),
        ("backup", "bare: pg_dump -Fd -j J, default gzip", "backup.bare_pg_dump_Fd_default_gzip"),
        ("backup", "pg_backup (exact), default gzip", "backup.pg_backup_exact_default_gzip"),
        ("backup", "  its own time (timings.total_s)", "backup.pg_backup_exact_default_gzip.in_module"),
        ("ansible", "ansible localhost -m ping (start-up)", "ansible.ping"),
        ("restore", "plan: dropdb/createdb/extension/psql < file.sql", "restore.plan_psql_sql"),
        ("restore", "plan + PGOPTIONS maintenance_work_mem (same mem)", "restore.plan_psql_sql_mwm"),
        ("restore", "pg_restore full -j J, no forensic backup", "restore.pg_restore"),
        ("restore", "pg_restore full -j J, forensic backup on (1 run)", "restore.pg_restore_forensic"),
        ("restore", "bare pg_restore -j J --section=pre-data (1 run)", "restore.bare_pg_restore_section.pre-data"),
        ("restore", "bare pg_restore -j J --section=data (1 run)", "restore.bare_pg_restore_section.data"),
        ("restore", "bare pg_restore -j J --section=post-data (1 run)", "restore.bare_pg_restore_section.post-data"),
    ]
    print(f"{'':8} {'what':50} {'median s':>9}  {'runs':40} {'peak RSS':>9}")
    for group, label, key in rows:
        if key not in m:
            continue  # --backup-only: no restores
        runs = ", ".join("%.2f" % x for x in res["runs_s"].get(key, []))
        peak = rss.get(key)
        print(f"{group:8} {label:50} {m.get(key) or 0:9.2f}  {runs:40} {('%d MB' % (peak / 1024)) if peak else '':>9}")
    print("\nratios (medians)")
    for k, v in res["ratios"].items():
        print(f"  {k:62} {v}")
    print(f"\naims met (headline pg_backup = row_counts {res['headline_row_counts']})")
    for k, v in res["aims_met"].items():
        print(f"  {k:62} {'yes' if v else 'NO'}")
    for key in ("hnsw_reindex", "hnsw_reindex_module_mwm"):
        if db.get(key):
            print(f"{'' if key != 'hnsw_reindex' else chr(10)}REINDEX of {db[key]['index']} alone, maintenance_work_mem "
                  f"{db[key]['maintenance_work_mem']}: {db[key]['seconds']} s")
    print("\npg_backup (exact) beyond bare pg_dump -Fd, seconds")
    for k, v in res["pg_backup_breakdown_s"].items():
        print(f"  {k:62} {v if v is not None else float('nan'):7.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=100, help="seed.py --scale (100 = about 385 MB; 5 for a quick run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are reported")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel jobs J (default: CPUs)")
    parser.add_argument("--backup-only", action="store_true",
                        help="measure the backups only (no restores: minutes instead of tens of minutes)")
    parser.add_argument("--compress", default="none",
                        help="--compress of bare pg_dump -Fd and pg_backup in the headline comparison (default none; "
                             "pg_dump's own default, gzip, is measured as well)")
    args = parser.parse_args(argv)
    if args.scale < 1 or args.repeat < 1 or args.jobs < 1:
        parser.error("--scale, --repeat and --jobs must be at least 1")
    bench = Bench(args)
    try:
        print(f"setting up PostgreSQL 18 + pgvector and seeding at scale {args.scale} ...", flush=True)
        bench.setup()
        print(f"database chatai: {bench.notes['database_size']} (seeded in {bench.notes['seed_s']} s)", flush=True)
        bench.measure()
        res = bench.report()
    finally:
        bench.cleanup()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    out.write_text(json.dumps(res, indent=2) + "\n")
    print_report(res)
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
