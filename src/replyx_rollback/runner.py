"""Run the project's playbooks through ansible-runner and turn the run's events into what an operator
needs: progress, hosts ok/failed/unreachable, warnings, the rollback's outcome, the report, an exit code.

Nothing here reads Ansible's stdout: results come from the events (task results, the facts a task set,
the stats event and any set_stats data in it). Ctrl-C is a safe-point cancel (the
collection's strategy `replyx.rollback.linear`); a second Ctrl-C kills the run."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ansible_runner

PACKAGE_DIR = Path(__file__).resolve().parent
# the collection's strategy (the rollback plays name it too): cancel at a safe point, unreachable delegates fail
STRATEGY = "replyx.rollback.linear"
PROJECT_ENV = "REPLYX_ROLLBACK_PROJECT"
# the task of playbooks/rollback.yml that prints the plan (rollback_plan.text, lines)
PLAN_TASK = "Show the plan"
# playbooks that run the rollback play (restore.yml and pitr.yml import rollback.yml)
ROLLBACK_PLAYBOOKS = ("rollback.yml", "restore.yml", "pitr.yml")
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")
_SECRET_ASSIGN = re.compile(r"(?i)\b(password|secret|token|secret_key)(\s*[=:]\s*)\S+")

# Exit codes (docs/cli.md). 2 is argparse's usage error.
EXIT_OK = 0
EXIT_FAILED = 1  # failed and not put back (escalated), or a procedure failed
EXIT_USAGE = 2
EXIT_REFUSED = 3  # refused before any change (bad request, approvals, lock held, planning failed)
EXIT_UNREACHABLE = 4  # one or more hosts unreachable
EXIT_RESCUED = 5  # a step failed and the rescue put the previous state back (or nothing had changed)
EXIT_VALIDATION = 6  # the rollback ran, the post-rollback validation failed
EXIT_CANCELLED = 130  # cancelled by Ctrl-C/SIGINT/SIGTERM (report says cancelled, lock released)
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "failed (not put back: escalate) or the procedure failed",
    EXIT_USAGE: "usage error (bad option, unknown inventory or project directory)",
    EXIT_REFUSED: "refused before any change",
    EXIT_UNREACHABLE: "hosts unreachable",
    EXIT_RESCUED: "rollback failed and rescued",
    EXIT_VALIDATION: "validation failed",
    EXIT_CANCELLED: "cancelled",
}

# Which task finishes a step of the plan (rollback_plan.steps: step kind -> module or task-name prefix).
# A name ending in "*" is a prefix; other names match exactly.
_STEP_DONE = {
    "lock": ("replyx.rollback.rollback_lock", None),
    "triage": (None, "Keep the triage snapshot"),
    "backup": ("replyx.rollback.pg_backup", None),
    "recovery_restore": ("replyx.rollback.pg_restore", None),
    "recovery_pitr": ("replyx.rollback.pg_pitr_restore", None),
    "stop_backend": (None, "Stop every backend"),
    "downgrade": ("replyx.rollback.alembic_downgrade", None),
    "code_backend": (None, "Switch the release of backend*"),
    "code_workers": (None, "Switch the release of workers*"),
    "drop_indexes": ("replyx.rollback.pg_index_drop", None),
    "validate": (None, "Keep the checklist"),
    "report": (None, "Remember where the report is"),
}


class UsageError(Exception):
    """Bad input the operator can fix: the message names the problem and the valid choices."""


def redact(text: str) -> str:
    return _SECRET_ASSIGN.sub(r"\1\2********", _URL_PASSWORD.sub(r"\1********@", str(text)))


# --- where things are -------------------------------------------------------------------------------

def _is_project(path: Path) -> bool:
    return (path / "playbooks" / "rollback.yml").is_file() and (path / "ansible.cfg").is_file()


def find_project(project_dir: str | None = None) -> Path:
    """The checkout (or copy) holding playbooks/, roles/, the collection and ansible.cfg: --project-dir,
    else $REPLYX_ROLLBACK_PROJECT, else the current directory or a parent of it, else the source tree
    this package runs from (an editable install)."""
    for source, value in (("--project-dir", project_dir), (PROJECT_ENV, os.environ.get(PROJECT_ENV))):
        if value:
            path = Path(value).expanduser().resolve()
            if not _is_project(path):
                raise UsageError(f"{source} {value}: not a replyx.rollback project directory "
                                 "(no playbooks/rollback.yml and ansible.cfg there)")
            return path
    cwd = Path.cwd().resolve()
    for path in (cwd, *cwd.parents, PACKAGE_DIR.parents[1]):
        if _is_project(path):
            return path
    raise UsageError("cannot find the replyx.rollback project (playbooks/, roles/, ansible.cfg): run from the "
                     f"checkout, pass --project-dir DIR or set {PROJECT_ENV}=DIR")


def tool_path(project: Path) -> list[Path]:
    """Directories with the tools a run needs, first match wins: the environment this command runs
    from (also when it is not on PATH), the project's .venv, the project's PM2 (.tools)."""
    dirs = [Path(sys.executable).parent, project / ".venv" / "bin", project / ".tools" / "node_modules" / ".bin"]
    return [d for d in dirs if d.is_dir()]


def find_ansible_playbook(dirs: list[Path]) -> str:
    for d in dirs:
        candidate = d / "ansible-playbook"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("ansible-playbook")
    if found:
        return found
    raise UsageError("ansible-playbook not found (looked in " + ", ".join(str(d) for d in dirs)
                     + " and PATH): install ansible-core into this environment (`make venv` in the project)")


def resolve_inventory(inventory: str | None, project: Path) -> str:
    """An inventory given as a path (relative to the current directory, else to the project) becomes an
    absolute path; ansible-runner would take any other string as inventory content."""
    if not inventory:
        return str(project / "inventories" / "lab")
    for base in (Path.cwd(), project):
        path = (base / inventory).expanduser()
        if path.exists():
            return str(path.resolve())
    choices = sorted(p.name for p in (project / "inventories").iterdir() if not p.name.startswith("."))
    raise UsageError(f"inventory {inventory!r} not found (relative paths are looked up in {Path.cwd()} and "
                     f"{project}); the project's inventories: {', '.join('inventories/' + c for c in choices)}")


# --- the result ---------------------------------------------------------------------------------------

@dataclass
class RunResult:
    playbook: str
    check: bool = False
    status: str = "unknown"
    rc: int = -1
    exit_code: int = EXIT_FAILED
    outcome: str = "unknown"
    cancelled: bool = False
    forced: bool = False
    failed_tasks: list = field(default_factory=list)
    unreachable: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    hosts: dict = field(default_factory=dict)  # ok / failed / unreachable -> [host]
    report: str | None = None
    report_json: str | None = None
    plan: str | None = None
    plan_text: list = field(default_factory=list)
    plan_steps: list = field(default_factory=list)
    plan_info: dict = field(default_factory=dict)  # run_id, level, releases and revision before, from the plan
    state: dict = field(default_factory=dict)  # rollback_run_state as the run last set it
    failed_phase: str | None = None
    stats_data: dict = field(default_factory=dict)  # set_stats data, when a playbook sets any
    seconds_to_restore: float | None = None
    elapsed_s: float = 0.0
    artifacts: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_json(self) -> dict:
        st = dict(self.plan_info, **{k: v for k, v in self.state.items() if v not in (None, "")})
        return {
            "playbook": self.playbook, "check_mode": self.check, "exit_code": self.exit_code,
            "exit_meaning": EXIT_CODES.get(self.exit_code, "failed"), "outcome": self.outcome,
            "cancelled": self.cancelled, "forced": self.forced, "runner_status": self.status, "ansible_rc": self.rc,
            "run_id": st.get("run_id"), "level": st.get("level"), "rollback_type": st.get("rollback_type"),
            "hosts": self.hosts, "unreachable": self.unreachable, "warnings": self.warnings,
            "failed_tasks": self.failed_tasks, "failed_phase": self.failed_phase,
            "failure": redact(st["failure"]) if st.get("failure") else None,
            "rescue": st.get("rescue") or None, "rescue_outcome": st.get("rescue_outcome"),
            "escalation_level": st.get("escalation_level"),
            "revision": {"before": st.get("revision_before"), "after": st.get("revision_after")},
            "backend_release": {"before": st.get("backend_release_before"), "after": st.get("backend_release_after")},
            "workers_release": {"before": st.get("workers_release_before"), "after": st.get("workers_release_after")},
            "command_started_at": st.get("command_started_at"), "restored_at": st.get("restored_at") or None,
            "seconds_to_restore": self.seconds_to_restore, "elapsed_s": round(self.elapsed_s, 1),
            "plan": {k: v for k, v in self.plan_info.items() if k not in ("run_id", "level")},
            "plan_steps": self.plan_steps, "plan_text": self.plan_text, "plan_file": self.plan,
            "report": self.report, "report_json": self.report_json, "stats": self.stats_data,
            "artifacts": self.artifacts,
        }


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime  # noqa: PLC0415

    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()
    except (TypeError, ValueError):
        return None


def classify(result: RunResult) -> int:
    """The exit code from what the run did (events), most specific first."""
    if result.cancelled:
        return EXIT_CANCELLED
    if result.unreachable:
        return EXIT_UNREACHABLE
    if result.status == "successful" and result.rc == 0:
        return EXIT_OK
    st = result.state
    if result.playbook in ROLLBACK_PLAYBOOKS:
        if not st.get("started_at"):
            return EXIT_REFUSED  # planning, approvals or the lock stopped it: no run record, nothing changed
        if result.failed_phase == "validate" or st.get("validation"):
            return EXIT_VALIDATION
        if st.get("rescue_outcome") in ("restored", "nothing_to_undo"):
            return EXIT_RESCUED
        return EXIT_FAILED
    if result.playbook == "validate.yml":
        return EXIT_VALIDATION
    return EXIT_FAILED


# --- progress -----------------------------------------------------------------------------------------

class Progress:
    """Steps done/total per host (the plan's steps, once the plan is known; tasks before that), the
    current step and the elapsed time: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, out: Callable[[str], None] | None, tty: bool):
        self.out, self.tty = out, tty
        self.started = time.monotonic()
        self.current = ""
        self.steps: list[dict] = []
        self.tasks_done: dict[str, int] = {}
        self._last_len = 0

    def set_plan(self, steps: list) -> None:
        self.steps = [dict(s, done=False) for s in steps if isinstance(s, dict)]

    def _counts(self) -> str:
        if self.steps:
            per: dict[str, list[int]] = {}
            for s in self.steps:
                c = per.setdefault(str(s.get("host")), [0, 0])
                c[0] += bool(s["done"])
                c[1] += 1
            return ", ".join(f"{h} {d}/{t}" for h, (d, t) in per.items())
        return ", ".join(f"{h} {n} tasks" for h, n in self.tasks_done.items())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _emit(self, line: str, status: bool = False) -> None:
        if not self.out:
            return
        if self.tty:
            text = f"[{self.elapsed():6.1f}s] {self._counts()} | {self.current}"[:200]
            sys.stdout.write("\r" + text.ljust(self._last_len) + ("" if status else "\n"))
            self._last_len = 0 if not status else len(text)
            if not status:
                self.out(line)
            sys.stdout.flush()
        elif not status:
            self.out(line)

    def task_started(self, name: str) -> None:
        self.current = name
        if self.tty:
            self._emit("", status=True)
        else:
            self._emit(f"  - {name}")

    def block(self, lines: list) -> None:
        for line in lines:
            self._emit(line)

    def task_finished(self, host: str, task: str, action: str) -> None:
        self.tasks_done[host] = self.tasks_done.get(host, 0) + 1
        for kind, (module, prefix) in _STEP_DONE.items():
            if (module and action == module) or (prefix and (task == prefix or prefix.endswith("*")
                                                             and task.startswith(prefix[:-1]))):
                self._step_done(kind, host)
        if self.tty:
            self._emit("", status=True)

    def _step_done(self, kind: str, host: str) -> None:
        matching = [s for s in self.steps if not s["done"] and str(s.get("step")) == kind]
        on_host = [s for s in matching if s.get("host") in (host, "controller")] or matching
        # one task finishes the downgrade (every step of it) and one batch of a switch (its hosts)
        batch = on_host if kind in ("downgrade",) else on_host[:1]
        if kind.startswith("code_") and on_host:
            batch = [s for s in on_host if s.get("batch") == on_host[0].get("batch")]
        for s in batch:
            s["done"] = True
            total = sum(1 for x in self.steps if x.get("host") == s.get("host"))
            done = sum(1 for x in self.steps if x.get("host") == s.get("host") and x["done"])
            line = f"  step {done}/{total} on {s.get('host')}: {kind} {s.get('detail', '')} ({self.elapsed():.1f} s)"
            self._emit(line)

    def close(self) -> None:
        if self.tty and self.out and self._last_len:
            sys.stdout.write("\r" + " " * self._last_len + "\r")
            sys.stdout.flush()


# --- the run ------------------------------------------------------------------------------------------

class Canceller:
    """SIGINT/SIGTERM: the first asks the run to stop at the next safe point (the strategy plugin sees the
    file), the second kills it (ansible-runner's cancel callback: SIGKILL of the process group)."""

    def __init__(self, flag: Path, say: Callable[[str], None]):
        self.flag, self.say, self.requested, self.forced = flag, say, False, False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):  # noqa: ARG002
        if not self.requested:
            self.requested = True
            self.flag.touch()
            self.say("\nreplyx-rollback: cancelling at the next safe point (the running step finishes; rescue, "
                     "report and lock release still run). Press Ctrl-C again to kill the run now.")
        else:
            self.forced = True
            self.say("\nreplyx-rollback: killing the run now: the lock and the report may be left behind")

    def __call__(self) -> bool:
        return self.forced


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|WEBHOOK|CREDENTIAL|_KEY$", re.I)


def _mask(name: str, value: str) -> str:
    if _SECRET_NAME.search(name):
        return "********"
    return _URL_PASSWORD.sub(r"\1********@", value)


def _scrub_artifacts(artifacts: Path) -> None:
    """ansible-runner writes the run's whole environment into artifacts/<ident>/command (REPLYX_WEBHOOK_URL and its
    token included): mask secret-looking variables and URL passwords there before the artifacts are kept."""
    for command in artifacts.glob("*/command"):
        try:
            data = json.loads(command.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            command.unlink(missing_ok=True)
            continue
        data["env"] = {k: _mask(k, str(v)) for k, v in (data.get("env") or {}).items()}
        command.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def run_playbook(playbook: str, extravars: dict | None = None, inventory: str | None = None,
                 check: bool = False, limit: str | None = None, verbosity: int = 0,
                 on_progress: Callable[[str], None] | None = None, keep_artifacts: str | None = None,
                 project_dir: str | None = None, tty: bool = False) -> RunResult:
    """Run playbooks/<playbook> of the project and return what an operator needs."""
    project = find_project(project_dir)
    playbooks = project / "playbooks"
    if not (playbooks / playbook).is_file():
        choices = sorted(p.name for p in playbooks.glob("*.yml"))
        raise UsageError(f"unknown playbook {playbook!r}; valid: {', '.join(choices)}")
    inv = resolve_inventory(inventory, project)
    dirs = tool_path(project)
    binary = find_ansible_playbook(dirs)
    data_dir = Path(tempfile.mkdtemp(prefix="replyx-runner-"))
    cancel_flag = data_dir / "cancel-requested"
    env = {
        # the ansible-playbook found first, then the other tool directories (PM2), then the caller's PATH
        "PATH": os.pathsep.join(dict.fromkeys([os.path.dirname(binary), *(str(d) for d in dirs),
                                               os.environ.get("PATH", "")])),
        # --project-dir names the whole project, its ansible.cfg included; else an ANSIBLE_CONFIG set by the
        # operator (a site's own settings) is kept
        "ANSIBLE_CONFIG": str(project / "ansible.cfg") if project_dir
        else os.environ.get("ANSIBLE_CONFIG") or str(project / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STRATEGY": STRATEGY,
        "REPLYX_CANCEL_FILE": str(cancel_flag),
    }
    result = RunResult(playbook=playbook, check=check)
    progress = Progress(on_progress, tty)

    def handler(event: dict) -> bool:
        data = event.get("event_data", {}) or {}
        kind = event.get("event", "")
        res = data.get("res") or {}
        task = str(data.get("task") or "")
        host = str((res.get("_ansible_delegated_vars") or {}).get("ansible_delegated_host") or data.get("host") or "")
        if kind == "playbook_on_task_start":
            if task and not task.startswith(("Validating arguments", "include")):
                progress.task_started(task)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_item_on_ok"):
            facts = res.get("ansible_facts") or {}
            if isinstance(facts.get("rollback_plan"), dict):
                plan = facts["rollback_plan"]
                result.plan_steps = [s for s in plan.get("steps") or [] if isinstance(s, dict)]
                result.plan_info = {k: plan.get(k) for k in ("run_id", "level", "rollback_type", "action", "execute",
                                                            "digest", "revision_before", "revision_target",
                                                            "backend_release_before", "backend_release_target",
                                                            "workers_release_before", "workers_release_target")}
                if not check:
                    progress.set_plan(result.plan_steps)
            if isinstance(facts.get("rollback_run_state"), dict):
                result.state = facts["rollback_run_state"]
            if facts.get("rollback_run_failed_phase"):
                result.failed_phase = str(facts["rollback_run_failed_phase"])
            if facts.get("incident_report_path"):
                result.report = str(facts["incident_report_path"])
                result.report_json = str(facts.get("incident_report_json_path") or "") or None
            if kind == "runner_on_ok" and task == PLAN_TASK:
                msg = res.get("msg")
                result.plan_text = [str(x) for x in (msg if isinstance(msg, list) else str(msg or "").splitlines())]
                progress.block(["", *result.plan_text, ""])  # the plan before anything runs, not after
            if kind == "runner_on_ok" and isinstance(res.get("dest"), str) and res["dest"].endswith(".txt") \
                    and "/plans/" in res["dest"]:
                result.plan = res["dest"]
            if kind == "runner_on_failed" and not data.get("ignore_errors"):
                msg = str(res.get("msg", ""))
                if res.get("stderr") and (not msg or msg == "non-zero return code"):
                    msg = f"{msg}: {str(res['stderr']).strip()[-500:]}"
                result.failed_tasks.append({"task": task, "host": host, "msg": redact(msg[:2000])})
            if kind in ("runner_on_ok", "runner_on_failed"):
                for w in res.get("warnings") or []:
                    result.warnings.append(f"{host}: {task}: {redact(w)}")
                if kind == "runner_on_ok":
                    progress.task_finished(host, task, str(data.get("task_action") or ""))
        elif kind == "runner_on_unreachable":
            result.unreachable[host] = redact(str(res.get("msg", "unreachable")))[:500]
        elif kind in ("warning", "deprecated", "verbose"):
            # Ansible's display events: warnings raised before the event callback loads (inventory parsing)
            # arrive as verbose events; the strategy plugin's own deprecation notice is ours, not news
            text = (event.get("stdout") or "").strip()
            if kind == "verbose" and not text.startswith("[WARNING]"):
                return True
            text = re.sub(r"^\[(DEPRECATION )?WARNING\]:\s*", lambda m: "deprecation: " if m.group(1) else "", text)
            if text and "deprecation_warnings=False" not in text and "Use of strategy plugins" not in text:
                result.warnings.append(redact(text))
        elif kind == "playbook_on_stats":
            failed = set(data.get("failures") or {}) | set(data.get("dark") or {})
            seen = set()
            for key in ("ok", "changed", "skipped", "rescued", "ignored", "failures", "dark", "processed"):
                seen |= set(data.get(key) or {})
            result.hosts = {"ok": sorted(seen - failed), "failed": sorted(set(data.get("failures") or {})),
                            "unreachable": sorted(set(data.get("dark") or {}))}
            artifact = data.get("artifact_data")
            if isinstance(artifact, dict):
                result.stats_data = artifact
                # the report's paths as the playbook published them (incident_report's set_stats)
                published = artifact.get("replyx_rollback")
                if isinstance(published, dict) and published.get("report"):
                    result.report = str(published["report"])
                    result.report_json = str(published.get("report_json") or "") or None
        return True

    cmdline = []
    if check:
        cmdline.append("--check")
    if limit:
        cmdline += ["--limit", limit]
    canceller = Canceller(cancel_flag, (lambda m: print(m, file=sys.stderr, flush=True)))
    try:
        with canceller:
            r = ansible_runner.run(
                private_data_dir=str(data_dir), project_dir=str(playbooks), playbook=playbook, inventory=inv,
                extravars=extravars or {}, envvars=env, cmdline=" ".join(cmdline) or None,
                quiet=True, event_handler=handler, cancel_callback=canceller, verbosity=verbosity, json_mode=False)
        result.status, result.rc = r.status, r.rc
    finally:
        progress.close()
        result.elapsed_s = progress.elapsed()
        result.cancelled, result.forced = canceller.requested, canceller.forced
        if keep_artifacts:
            dest = Path(keep_artifacts).resolve()
            _scrub_artifacts(data_dir / "artifacts")
            shutil.copytree(data_dir / "artifacts", dest, dirs_exist_ok=True)
            result.artifacts = str(dest)
        shutil.rmtree(data_dir, ignore_errors=True)
    st = result.state
    result.seconds_to_restore = _seconds_between(st.get("command_started_at"), st.get("restored_at") or None)
    result.outcome = "cancelled" if result.cancelled else str(st.get("outcome") or (
        "success" if result.status == "successful" and result.rc == 0 else "failed"))
    if check and result.status == "successful":
        result.outcome = "planned"
    result.exit_code = classify(result)
    if result.cancelled and result.report:
        mark_report_cancelled(result)
    return result


def mark_report_cancelled(result: RunResult) -> None:
    """The run was cancelled: say so in the incident report the always section wrote (Markdown and JSON)."""
    md = Path(result.report)
    if md.is_file():
        text = md.read_text()
        text = re.sub(r"^(- \*\*Outcome:\*\* )([A-Z_]+)",
                      r"\1CANCELLED by the operator (Ctrl-C: the running step finished, the next one was failed on purpose, "
                      r"then rescue, report and lock release ran; the playbook recorded \2)", text, count=1, flags=re.M)
        md.write_text(text)
    js = Path(result.report_json or "")
    if result.report_json and js.is_file():
        try:
            data = json.loads(js.read_text())
        except ValueError:
            return
        if isinstance(data, dict):
            data["cancelled"] = True
            data["outcome_recorded"] = data.get("outcome")
            data["outcome"] = "cancelled"
            js.write_text(json.dumps(data, indent=2) + "\n")
    published = result.stats_data.get("replyx_rollback") if isinstance(result.stats_data, dict) else None
    if isinstance(published, dict):  # what --json shows under stats says what the report says
        result.stats_data = dict(result.stats_data, replyx_rollback=dict(
            published, cancelled=True, outcome_recorded=published.get("outcome"), outcome="cancelled"))
