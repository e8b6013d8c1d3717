"""Run the project's playbooks through ansible-runner: private data dir, quiet, an event handler
that turns events into one progress line per task, only ANSIBLE_*/REPLYX_* environment passed on."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ansible_runner

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
DEFAULT_INVENTORY = REPO / "inventories" / "lab"
REPORT_RE = re.compile(r"Incident report: (\S+\.md)")
PLAN_RE = re.compile(r"Plan written: (\S+\.txt)")
# the task of playbooks/rollback.yml that prints the plan (rollback_plan.text, lines)
PLAN_TASK = "Show the plan"


@dataclass
class RunResult:
    playbook: str
    status: str
    rc: int
    failed_tasks: list = field(default_factory=list)
    report: str | None = None
    plan: str | None = None
    plan_text: list = field(default_factory=list)
    messages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(("ANSIBLE_", "REPLYX_"))}
    env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|WEBHOOK|CREDENTIAL|_KEY$", re.I)
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\s]+@")


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


def run_playbook(playbook: str, extravars: dict | None = None, inventory: str | Path | None = None,
                 check: bool = False, limit: str | None = None, verbosity: int = 0,
                 on_progress: Callable[[str], None] | None = None, keep_artifacts: str | None = None) -> RunResult:
    """Run playbooks/<playbook> and return what an operator needs: status, rc, failures, report path."""
    if not (PLAYBOOKS / playbook).is_file():
        choices = sorted(p.name for p in PLAYBOOKS.glob("*.yml"))
        raise ValueError(f"unknown playbook {playbook!r}; valid: {', '.join(choices)}")
    data_dir = Path(tempfile.mkdtemp(prefix="replyx-runner-"))
    result = RunResult(playbook=playbook, status="unknown", rc=-1)
    seen_tasks: set = set()

    def handler(event: dict) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event", "")
        if kind == "playbook_on_task_start" and on_progress:
            name = data.get("task", "")
            if name and name not in seen_tasks and not name.startswith(("Validating arguments", "include")):
                seen_tasks.add(name)
                on_progress(f"  - {name}")
        elif kind == "runner_on_ok" and data.get("task") == PLAN_TASK:
            msg = (data.get("res") or {}).get("msg")
            result.plan_text = [str(line) for line in (msg if isinstance(msg, list) else str(msg or "").splitlines())]
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            res = data.get("res", {})
            result.failed_tasks.append({"task": data.get("task"), "host": data.get("host"),
                                        "msg": str(res.get("msg", ""))[:2000]})
        stdout = event.get("stdout") or ""
        for regex, attr in ((REPORT_RE, "report"), (PLAN_RE, "plan")):
            m = regex.search(stdout)
            if m:
                setattr(result, attr, m.group(1).rstrip("'\","))
        return True

    cmdline = []
    if check:
        cmdline.append("--check")
    if limit:
        cmdline += ["--limit", limit]
    try:
        r = ansible_runner.run(
            private_data_dir=str(data_dir), project_dir=str(PLAYBOOKS), playbook=playbook,
            inventory=str(inventory or DEFAULT_INVENTORY), extravars=extravars or {}, envvars=_env(),
            cmdline=" ".join(cmdline) or None, quiet=True, event_handler=handler, verbosity=verbosity,
            json_mode=False)
        result.status, result.rc = r.status, r.rc
    finally:
        if keep_artifacts:
            _scrub_artifacts(data_dir / "artifacts")
            shutil.copytree(data_dir / "artifacts", keep_artifacts, dirs_exist_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result
