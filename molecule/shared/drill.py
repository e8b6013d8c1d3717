#!/usr/bin/env python3
"""Run one drill: a playbook against the drill fleet while a client sends requests through HAProxy.

    drill.py --scenario default --name high --bad-release v1.2.0 -- playbooks/rollback.yml -e level=high ...

Before the run it records every table's row count and checksum (PostgreSQL superuser DSN from the
environment variable REPLYX_DRILL_DSN, never from the command line); during the run a client sends
GET /health through the load balancer every 50 ms; after it the tables are compared (rows lost: rows
missing from a table that exists before and after; a table the rollback drops on purpose is listed,
not counted). One row per drill goes to artifacts/drills.json and the table artifacts/drills.md:
scenario, drill, result, seconds to service restored (from the start of the run to the first answer
after the last one that came from the bad release), whole-run seconds, failed client requests, rows lost.

Recovery drills (molecule/recovery) compare with a snapshot taken before the damage instead:

    drill.py --scenario recovery --snapshot good                 # every table's count and checksum, kept
    drill.py --scenario recovery --sql "DELETE FROM ..."         # the damage (prints the last result)
    drill.py --scenario recovery --name full --expect-snapshot good -- playbooks/restore.yml ...

Faults (molecule/chaos) fire when the playbook's output first matches --fault-when: `cut` (a host's link down,
mended after the run), `kill` (the controlling ansible-playbook gets SIGKILL), `kill-postgres` (on the
PostgreSQL host, as soon as a pg_dump into its backup directory runs, the postmaster and its children get
SIGKILL; PostgreSQL is started again after the run, before the tables are read). --record-state keeps what
the hosts themselves say before and after the run (each backend's checked-out tag, PM2 process and /health,
the schema revision, HAProxy's server states, the backups and manifests on the PostgreSQL host) in the row.
A release that starts only on some hosts: drill.py --publish v1.1.1 --needs-module NAME (v1.1.0 importing
NAME, pushed to the drill's release repository; only a host with NAME.py in its app directory can start it).

Exit status: 0 when the playbook succeeded, no request failed and no row was lost; 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["scenario", "drill", "result", "restored_s", "run_s", "requests", "failed_requests", "rows_lost"]


def fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    import psycopg  # the venv's; imported here so --help works anywhere

    out = {}
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        for table in tables:
            count, digest = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t").fetchone()
            out[table] = (count, digest)
    return out


class LoadClient(threading.Thread):
    """GET url every interval seconds; keeps (seconds since start, status or error, release)."""

    def __init__(self, url: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, object, str]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    body = json.loads(resp.read() or b"{}")
                    self.samples.append((started - self.t0, resp.status, str(body.get("release", ""))))
            except urllib.error.HTTPError as exc:
                self.samples.append((started - self.t0, exc.code, ""))
            except (OSError, ValueError) as exc:
                self.samples.append((started - self.t0, type(exc).__name__, ""))
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def restored_at(samples, bad: str) -> float | None:
    """Seconds to the first good answer after the last answer from the bad release."""
    last_bad = max((i for i, s in enumerate(samples) if s[2] == bad), default=-1)
    after = [s for s in samples[last_bad + 1:] if s[1] == 200]
    return round(after[0][0], 2) if after else None


class Fault(threading.Thread):
    """Watches the playbook's output; at the first match of --fault-when, cuts a host's link, kills the run or
    kills PostgreSQL on the fault host."""

    def __init__(self, args, log: Path, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.args, self.log, self.proc = args, log, proc
        self.pattern = re.compile(args.fault_when)
        self.fired = threading.Event()
        self.done = threading.Event()
        self.notes: list[str] = []
        self.start()

    def run(self) -> None:
        while not self.done.is_set() and self.proc.poll() is None:
            if self.pattern.search(self.log.read_text(encoding="utf-8", errors="replace")):
                if self.args.fault == "cut":
                    netns("cut", self.args.fault_host)
                elif self.args.fault == "kill-postgres":
                    out = ssh(address_of(self.args.inventory, self.args.fault_host), PG_KILL, timeout=60)
                    self.notes.append((out.stdout + out.stderr).strip())
                    if out.returncode:
                        return
                else:
                    self.proc.send_signal(signal.SIGKILL)
                self.fired.set()
                return
            time.sleep(0.2)

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=60)
        if self.args.fault == "cut" and self.fired.is_set():
            netns("mend", self.args.fault_host)
        if self.args.fault == "kill-postgres" and self.fired.is_set():
            out = ssh(address_of(self.args.inventory, self.args.fault_host), PG_START, timeout=120)
            self.notes.append((out.stdout + out.stderr).strip())
            if out.returncode:
                print(f"PostgreSQL on {self.args.fault_host} did not start again: {self.notes[-1]}", file=sys.stderr)
        if not self.fired.is_set():
            print(f"the fault never fired: /{self.args.fault_when}/ did not appear in {self.log}", file=sys.stderr)


def snapshot_path(artifacts: Path, name: str) -> Path:
    return artifacts / "drills" / f"snapshot-{name}.json"


def compare_snapshot(snap: dict, after: dict, shape_only: bool) -> tuple[int, list[str]]:
    """Rows lost against a snapshot (rows missing from its tables; a missing table loses all of them) and the
    tables that differ. shape_only: every table must exist and be empty (a schema-only restore)."""
    lost, problems = 0, []
    for table, (count, digest) in sorted(snap.items()):
        if table not in after:
            lost += count
            problems.append(f"{table} is missing (had {count} rows before the damage)")
        elif shape_only:
            if after[table][0]:
                problems.append(f"{table} has {after[table][0]} rows after a schema-only restore")
        elif tuple(after[table]) != (count, digest):
            lost += max(0, count - after[table][0])
            problems.append(f"{table}: {after[table][0]} rows, checksum {after[table][1][:8]} (before the damage: "
                            f"{count} rows, {digest[:8]})")
    return lost, problems


def run_sql(dsn: str, sql: str) -> str:
    import psycopg  # the venv's

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(sql)
        rows = cur.fetchall() if cur.description else []
    return "\n".join("|".join("" if v is None else str(v) for v in row) for row in rows)


def netns(*argv: str) -> None:
    subprocess.run([sys.executable, str(Path(__file__).with_name("netns_hosts.py")), *argv], check=True)


def newest_report(artifacts: Path, since: float) -> Path | None:
    reports = [p for p in artifacts.glob("incident-*.md") if p.stat().st_mtime >= since]
    return max(reports, key=lambda p: p.stat().st_mtime) if reports else None


def drill_root() -> Path:
    return Path(os.environ.get("REPLYX_DRILL_ROOT") or REPO / ".drill")


def inventory_hosts(inventory: str) -> dict[str, dict[str, str]]:
    """{group: {host: address}} of the drill fleet's inventory."""
    import yaml  # the venv's

    groups = yaml.safe_load((Path(inventory) / "hosts.yml").read_text(encoding="utf-8"))["all"]["children"]["drill_fleet"]["children"]
    return {g: {h: v["ansible_host"] for h, v in (spec.get("hosts") or {}).items()} for g, spec in groups.items()}


def address_of(inventory: str, host: str) -> str:
    return next(a for hosts in inventory_hosts(inventory).values() for h, a in hosts.items() if h == host)


def ssh(address: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a shell script on a drill host as its root, over SSH with the drill's key and known hosts."""
    root = drill_root()
    return subprocess.run(["ssh", "-i", str(root / "id_ed25519"), "-o", f"UserKnownHostsFile={root / 'known_hosts'}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
                           f"root@{address}", script],
                          capture_output=True, text=True, check=False, timeout=timeout)


def lock_left(inventory: str) -> str:
    """The lock file of the drill environment on the PostgreSQL host, read over SSH ('' when there is none)."""
    address = next(iter(inventory_hosts(inventory)["replyx_postgres"].values()))
    proc = ssh(address, "cat /srv/replyx/postgres/rollback-drill.lock.json 2>/dev/null || true")
    return proc.stdout.strip()[:300]


PG_DATA = "/srv/replyx/postgres/data"
# the postmaster of the host's own cluster (its data directory is under the host's own /srv)
PG_KILL = r"""
pid=$(head -n 1 %(data)s/postmaster.pid 2>/dev/null) || { echo "no postmaster.pid"; exit 1; }
seen=no
for _ in $(seq 1 1500); do  # up to 30 s: until a pg_dump writes into the backup directory
  # [s]: the pattern must not match this script's own command line
  if pgrep -f -- 'pg_dump.*--file=/srv/replyx/postgres/backup[s]/' >/dev/null; then seen=yes; break; fi
  sleep 0.02
done
kids=$(pgrep -P "$pid" | tr '
' ' ')
readlink "/proc/$pid/exe" > /srv/replyx/postgres/killed-postmaster.exe
kill -KILL "$pid" $kids
echo "pg_dump running when killed: $seen; postmaster $pid and children $kids killed"
""" % {"data": PG_DATA}
PG_START = r"""
bin=$(dirname "$(cat /srv/replyx/postgres/killed-postmaster.exe)")
for _ in $(seq 1 60); do  # the killed children must be gone before a new postmaster can take the shared memory
  runuser -u postgres -- "$bin/pg_ctl" start -w -t 60 -D %(data)s -l /srv/replyx/postgres/log/postgresql.log >/dev/null 2>&1     && { rm -f /srv/replyx/postgres/killed-postmaster.exe; echo started; exit 0; }
  sleep 1
done
echo "PostgreSQL did not start again"; exit 1
""" % {"data": PG_DATA}


def host_state(inventory: str, dsn: str) -> dict:
    """What the hosts themselves say: each backend's checked-out tag, PM2 process of the backend and its own
    /health; the schema revision; HAProxy's server states; the backups and manifests on the PostgreSQL host."""
    hosts = inventory_hosts(inventory)
    pm2 = REPO / ".tools" / "node_modules" / ".bin" / "pm2"
    state: dict = {"backends": {}}
    for host, address in hosts.get("replyx_backend", {}).items():
        proc = ssh(address, f"git -C /srv/replyx/backend/app describe --tags --exact-match 2>/dev/null; echo '--'; "
                            f"PM2_HOME=/srv/replyx/backend/pm2 {pm2} jlist 2>/dev/null")
        tag, _, jlist = proc.stdout.partition("--\n")
        try:
            procs = json.loads(jlist[jlist.index("["):])
        except ValueError:
            procs = []
        app = next((p for p in procs if p.get("name") == "replyx-backend"), {})
        try:
            with urllib.request.urlopen(f"http://{address}:8000/health", timeout=5) as resp:
                health = json.loads(resp.read() or b"{}")
        except (OSError, ValueError) as exc:
            health = {"error": type(exc).__name__}
        state["backends"][host] = {"tag": tag.strip(), "pid": app.get("pid"),
                                   "status": app.get("pm2_env", {}).get("status"), "health_release": health.get("release"),
                                   "health_revision": health.get("alembic_revision")}
    try:
        state["revision"] = run_sql(dsn, "SELECT version_num FROM alembic_version")
    except Exception as exc:  # noqa: BLE001 - recorded: PostgreSQL may be the fault
        state["revision"] = f"unreadable: {type(exc).__name__}"
    for host, address in hosts.get("replyx_lb", {}).items():
        proc = ssh(address, "echo 'show servers state replyx_backend' | socat stdio unix-connect:/srv/replyx/haproxy/run/admin.sock")
        rows = [line.split() for line in proc.stdout.splitlines() if line and not line.startswith("#") and " " in line]
        # server name: operational state (2 = up), admin state (0 = ready, not drained/maintenance)
        state.setdefault("haproxy", {})[host] = {r[3]: {"op": r[5], "admin": r[6]} for r in rows if len(r) > 6}
    for host, address in hosts.get("replyx_postgres", {}).items():
        proc = ssh(address, "ls -1 /srv/replyx/postgres/backups 2>/dev/null")
        state["backups"] = sorted(proc.stdout.split())
    return state


def publish_release(tag: str, module: str) -> None:
    """v1.1.0 with `import <module>` added, pushed as `tag` to the drill's backend release repository
    (replacing a tag of that name): it starts only on a host whose app directory has <module>.py."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="replyx-drill-release-"))
    try:
        def git(*a: str) -> None:
            subprocess.run(["git", *a], cwd=work, check=True, capture_output=True)
        git("clone", "-q", str(drill_root() / "repos" / "backend.git"), ".")
        git("checkout", "-q", "v1.1.0")
        main = work / "main.py"
        future = "from __future__ import annotations\n"
        text = main.read_text(encoding="utf-8")
        if future not in text:
            raise SystemExit(f"{main} has no {future.strip()!r} line to put the import after")
        main.write_text(text.replace(future, future + f"import {module}  # noqa: F401  (only some hosts have it)\n", 1),
                        encoding="utf-8")
        git("add", "main.py")
        git("-c", "user.name=drill", "-c", "user.email=drill@replyx.invalid", "commit", "-qm", f"needs {module}.py on the host")
        git("tag", "-f", tag)
        git("push", "-qf", "origin", tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_rows(artifacts: Path) -> list[dict]:
    path = artifacts / "drills.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def write_rows(artifacts: Path, rows: list[dict]) -> None:
    """artifacts/drills.json and the table artifacts/drills.md."""
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "drills.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lines = ["# Drills", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |")
    (artifacts / "drills.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def record(artifacts: Path, row: dict) -> None:
    """Add a drill's row, replacing an earlier row of the same scenario and drill."""
    rows = [r for r in read_rows(artifacts) if (r["scenario"], r["drill"]) != (row["scenario"], row["drill"])]
    write_rows(artifacts, rows + [row])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", required=True)
    p.add_argument("--name", default="", help="the drill's name in the table (e.g. high)")
    p.add_argument("--bad-release", default="", help="release the load client must stop seeing")
    p.add_argument("--lb-url", default="http://10.77.0.41:8080/health")
    p.add_argument("--inventory", default=str(REPO / "inventories" / "drill"))
    p.add_argument("--artifacts", default=os.environ.get("REPLYX_ARTIFACTS_DIR") or str(REPO / "artifacts"))
    p.add_argument("--expect-failure", action="store_true", help="the playbook must fail (fault drills)")
    p.add_argument("--unchanged", action="store_true",
                   help="every table's rows and checksum must be the same afterwards (a --check run)")
    # faults (molecule/chaos): what happens, when the playbook's output first matches --fault-when
    p.add_argument("--fault", choices=["cut", "kill", "kill-postgres"],
                   help="cut: the link of --fault-host goes down (mended after the run); "
                   "kill: the controlling ansible-playbook gets SIGKILL; kill-postgres: PostgreSQL on --fault-host gets "
                   "SIGKILL (postmaster and children) once a pg_dump into its backup directory runs, started again after the run")
    p.add_argument("--fault-host", default="", help="the host whose link is cut or whose PostgreSQL is killed")
    p.add_argument("--record-state", action="store_true",
                   help="keep what the hosts say before and after the run (tags, PM2 PIDs, /health, revision, HAProxy, backups)")
    p.add_argument("--publish", metavar="TAG", help="only publish TAG: v1.1.0 importing --needs-module (see above)")
    p.add_argument("--needs-module", default="replyx_drill_probe", help="with --publish: the module the release imports")
    p.add_argument("--fault-when", default="", help="regular expression on the playbook's output that triggers the fault")
    p.add_argument("--deadline", type=float, default=900, help="seconds before a run counts as hung and is killed")
    p.add_argument("--report-says", default="", help="regular expression the run's incident report must match")
    p.add_argument("--lock-released", action="store_true", help="the environment's rollback lock must be gone afterwards")
    p.add_argument("--allow-failed-requests", action="store_true",
                   help="failed requests are recorded but do not fail the drill (the fault itself takes a backend away)")
    p.add_argument("--reset", action="store_true", help="only remove the scenario's rows from the drills' table")
    p.add_argument("--plain", action="store_true",
                   help="only run the playbook (its output to the drill log): no client, no table, no DSN needed")
    p.add_argument("--snapshot", metavar="NAME", help="only record every table's row count and checksum as NAME")
    p.add_argument("--sql", help="only run this SQL as the superuser (the damage, a probe) and print its last result")
    p.add_argument("--expect-snapshot", metavar="NAME",
                   help="afterwards every table of snapshot NAME must have its rows and checksum back (a restore)")
    p.add_argument("--expect-shape-only", action="store_true",
                   help="with --expect-snapshot: every table must exist and be empty (a schema-only restore)")
    p.add_argument("playbook", nargs=argparse.REMAINDER, help="-- PLAYBOOK [ansible-playbook arguments]")
    args = p.parse_args(argv)
    play = [a for a in args.playbook if a != "--"]
    if args.publish:
        publish_release(args.publish, args.needs_module)
        return 0
    if args.reset:
        write_rows(Path(args.artifacts), [r for r in read_rows(Path(args.artifacts)) if r["scenario"] != args.scenario])
        return 0
    if args.snapshot or args.sql:
        dsn = os.environ.get("REPLYX_DRILL_DSN", "")
        if not dsn:
            p.error("set REPLYX_DRILL_DSN (the PostgreSQL superuser DSN of the drill fleet)")
        if args.sql:
            print(run_sql(dsn, args.sql))
        if args.snapshot:
            path = snapshot_path(Path(args.artifacts), args.snapshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fingerprint(dsn), indent=1) + "\n", encoding="utf-8")
        return 0
    snap = None
    if args.expect_snapshot:
        path = snapshot_path(Path(args.artifacts), args.expect_snapshot)
        if not path.is_file():
            p.error(f"no snapshot {args.expect_snapshot!r} ({path}); take it with --snapshot {args.expect_snapshot}")
        snap = {t: tuple(v) for t, v in json.loads(path.read_text(encoding="utf-8")).items()}
    if not args.name and not args.reset:
        p.error("name the drill (--name)")
    if not play and not args.reset:
        p.error("name the playbook after --, e.g. -- playbooks/rollback.yml -e level=high")
    dsn = os.environ.get("REPLYX_DRILL_DSN", "")
    if not dsn and not args.plain:
        p.error("set REPLYX_DRILL_DSN (the PostgreSQL superuser DSN of the drill fleet)")

    bindir = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PYTHONPATH=str(REPO / "collection"),
               PATH=os.pathsep.join([str(bindir), str(REPO / ".tools" / "node_modules" / ".bin"), os.environ.get("PATH", "")]),
               ANSIBLE_FORCE_COLOR="0", REPLYX_ARTIFACTS_DIR=args.artifacts)
    env.pop("REPLYX_DRILL_DSN", None)
    logs = Path(args.artifacts) / "drills"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{args.scenario}-{args.name}.log"

    if args.plain:
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", args.inventory, *play],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode:
            print(f"playbook exit {proc.returncode}; the end of its output ({log}):", file=sys.stderr)
            print("".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-40:]), file=sys.stderr)
        return proc.returncode

    before = fingerprint(dsn)
    state_before = host_state(args.inventory, dsn) if args.record_state else None
    client = LoadClient(args.lb_url)
    client.start()
    time.sleep(0.5)  # a few answers from before the run
    t_start = time.monotonic() - client.t0
    wall_start = time.time()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([str(bindir / "ansible-playbook"), "-i", args.inventory, *play],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        fault = Fault(args, log, proc) if args.fault else None
        try:
            rc = proc.wait(timeout=args.deadline)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, hung = proc.wait(), True
        if fault:
            fault.finish()
    t_end = time.monotonic() - client.t0
    time.sleep(0.5)
    client.stop()
    after = fingerprint(dsn)
    state_after = host_state(args.inventory, dsn) if args.record_state else None

    in_run = [s for s in client.samples if t_start <= s[0] <= t_end + 0.5]
    failed = [s for s in in_run if s[1] != 200]
    dropped = sorted(t for t in before if t not in after)
    lost = sum(max(0, before[t][0] - after[t][0]) for t in before if t in after)
    restored = restored_at([(s[0] - t_start, s[1], s[2]) for s in in_run], args.bad_release) if args.bad_release else None
    ok_run = not hung and ((rc != 0) if args.expect_failure else (rc == 0))
    changed_tables = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
    problems = []
    if snap is not None:  # a restore: measured against the state before the damage, not before the run
        lost, problems = compare_snapshot(snap, after, args.expect_shape_only)
    if args.report_says:
        report = newest_report(Path(args.artifacts), wall_start)
        if report is None:
            problems.append("no incident report written by the run")
        elif not re.search(args.report_says, report.read_text(encoding="utf-8")):
            problems.append(f"the report {report.name} does not say /{args.report_says}/")
    if fault and not fault.fired.is_set():
        problems.append(f"the fault never fired (/{args.fault_when}/ never appeared in the output)")
    if fault and args.fault == "kill-postgres" and fault.fired.is_set() and not any("pg_dump running when killed: yes" in n for n in fault.notes):
        problems.append(f"PostgreSQL was not killed while a pg_dump ran: {fault.notes}")
    if args.lock_released and (left := lock_left(args.inventory)):
        problems.append(f"the rollback lock is still held: {left}")
    passed = (ok_run and (args.allow_failed_requests or not failed) and lost == 0
              and not (args.unchanged and changed_tables) and not problems)
    row = {"scenario": args.scenario, "drill": args.name, "result": "pass" if passed else "FAIL",
           "restored_s": restored, "run_s": round(t_end - t_start, 1), "requests": len(in_run),
           "failed_requests": len(failed), "rows_lost": lost, "playbook_rc": rc, "hung": hung, "problems": problems,
           "tables_dropped_by_the_rollback": dropped,
           "tables_changed": changed_tables, "log": str(log)}
    report = newest_report(Path(args.artifacts), wall_start)
    row["report"] = str(report) if report else None
    if fault:
        row["fault_notes"] = fault.notes
    if args.record_state:
        row["state_before"], row["state_after"] = state_before, state_after
    record(Path(args.artifacts), row)
    print(json.dumps(row))
    if failed:
        print(f"failed requests through the load balancer: {failed[:10]}", file=sys.stderr)
    if args.unchanged and changed_tables:
        print(f"tables changed by a run that must change nothing: {changed_tables}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not ok_run:
        print(f"playbook exit {rc}{' (hung: killed after the deadline)' if hung else ''}; its output: {log}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
