"""The ansible-runner CLI and the Fabric quick commands against the running lab."""
from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests import labutil

pytestmark = pytest.mark.lab


def _run(*argv, cwd=None, drop=(), **env):
    return subprocess.run([str(labutil.VENV_BIN / argv[0]), *argv[1:]], cwd=cwd or labutil.ROOT,
                          env=labutil.env(drop=drop, **env), capture_output=True, text=True, timeout=600)


APPROVALS = ("--approval", "lead:team_lead:INC-1", "--approval", "dba:executive:INC-1")
LOCK = labutil.LAB_ROOT / "postgres" / "rollback-lab.lock.json"


def _no_secrets(text):
    for secret in labutil.SECRETS:
        assert secret not in text


def test_cli_plans_a_rollback_with_a_relative_inventory_and_changes_nothing(lab, tmp_path):
    head = labutil.psql("select version_num from alembic_version")
    # -i with a relative path: once taken by ansible-runner as inventory content (a host named "inventories/lab")
    proc = _run("replyx-rollback", "-i", "inventories/lab", "plan", "high", "--target", "widget_version", *APPROVALS,
                REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "rollback.yml (check mode)" in proc.stdout
    # progress without a terminal: one plain line per task, no carriage returns
    assert "  - Check the request and compute the plan (changes nothing)" in proc.stdout and "\r" not in proc.stdout
    # the plan itself, as ansible-playbook --check prints it: the steps and what the downgrade drops
    assert "CHECK MODE: nothing will change" in proc.stdout
    assert "Alembic: a1b2c3d4e5f6 -> fb3228f45466" in proc.stdout and "DROPS DATA" in proc.stdout
    assert "Backup: tables assistants" in proc.stdout
    assert "Steps:" in proc.stdout and "  1. " in proc.stdout
    # the closing summary
    assert "result: planned (exit 0: success)" in proc.stdout
    assert "hosts: ok backend, localhost, postgres, workers | failed - | unreachable -" in proc.stdout
    assert labutil.psql("select version_num from alembic_version") == head
    _no_secrets(proc.stdout + proc.stderr)


def test_cli_json_comes_from_the_run_events_from_any_directory(lab, tmp_path):
    # run from outside the checkout: the project comes from REPLYX_ROLLBACK_PROJECT
    proc = _run("replyx-rollback", "plan", "high", "--target", "widget_version", "--json", cwd=tmp_path,
                REPLYX_ROLLBACK_PROJECT=labutil.ROOT, REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # nothing but the JSON object on stdout
    assert result["exit_code"] == 0 and result["outcome"] == "planned" and result["check_mode"] is True
    assert result["level"] == "high" and result["run_id"].endswith("-high")
    assert result["revision"]["before"] == "a1b2c3d4e5f6" and result["plan"]["revision_target"] == "fb3228f45466"
    assert [s["step"] for s in result["plan_steps"]] == ["triage", "lock", "backup", "code_backend", "downgrade",
                                                        "validate", "report"]
    assert result["hosts"] == {"ok": ["backend", "localhost", "postgres", "workers"], "failed": [], "unreachable": []}
    assert result["unreachable"] == {} and result["failed_tasks"] == []
    _no_secrets(proc.stdout + proc.stderr)


def test_cli_reports_a_refused_rollback_with_its_exit_code(lab, tmp_path):
    # -e passes extra variables through as ansible-playbook takes them (here the approvals, by a developer)
    proc = _run("replyx-rollback", "run", "critical", "-e", "approvals=solo:developer:INC-1", "--json",
                "--keep-artifacts", str(tmp_path / "art"), REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["exit_meaning"] == "refused before any change" and result["outcome"] == "failed"
    assert any("needs approval by a executive" in f["msg"] and "Recorded approvals: solo." in f["msg"]
               for f in result["failed_tasks"])
    assert result["report"] is None and not LOCK.exists()
    # --keep-artifacts: ansible-runner's events and stdout of the run
    assert list((tmp_path / "art").glob("*/job_events/*.json")) and list((tmp_path / "art").glob("*/stdout"))


def test_cli_names_an_unreachable_host_and_the_warnings(lab, tmp_path):
    # a copy of the lab inventory in which the workers host is behind a closed SSH port; -i relative to the cwd
    shutil.copytree(labutil.ROOT / "inventories" / "lab", tmp_path / "lab-down")
    with open(tmp_path / "lab-down" / "host_vars" / "workers.yml", "a", encoding="utf-8") as fh:
        fh.write("\nansible_connection: ssh\nansible_host: 127.0.0.1\nansible_port: 1\nansible_user: nobody\n")
    with open(tmp_path / "lab-down" / "hosts.yml", "a", encoding="utf-8") as fh:  # a group name Ansible warns about
        fh.write("    on-call:\n      hosts:\n        workers:\n")
    proc = _run("replyx-rollback", "plan", "critical", "-i", "lab-down", cwd=tmp_path, REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "result: failed (exit 4: hosts unreachable)" in proc.stdout
    assert "unreachable: workers: " in proc.stdout and "port 1: Connection refused" in proc.stdout
    assert "| unreachable workers" in proc.stdout
    assert "warning: Invalid characters were found in group names" in proc.stdout
    assert "strategy plugins" not in proc.stdout  # the CLI's own strategy plugin is not news to the operator


def test_cli_exit_code_of_a_failed_validation(lab, tmp_path):
    # the checklist against a backend port nothing listens on (the lab itself is untouched), one attempt
    proc = _run("replyx-rollback", "validate", "-e", "validation_deadline_s=0", "--json",
                REPLYX_BACKEND_PORT=1, REPLYX_ARTIFACTS_DIR=tmp_path)
    assert proc.returncode == 6, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["exit_meaning"] == "validation failed" and result["hosts"]["failed"] == ["localhost"]
    assert any(f["msg"].startswith("Validation failed: health") for f in result["failed_tasks"])
    assert labutil.http_json(f"{labutil.BACKEND_URL}/health")[0] == 200


def test_cli_ctrl_c_stops_at_a_safe_point_releases_the_lock_and_reports_cancelled(lab, tmp_path):
    head = labutil.psql("select version_num from alembic_version")
    history = labutil.release_history("backend")
    kept = tmp_path / "runner artifacts"
    proc = subprocess.Popen([str(labutil.VENV_BIN / "replyx-rollback"), "run", "high", "--target", "widget_version",
                             *APPROVALS, "--keep-artifacts", str(kept)], cwd=labutil.ROOT,
                            env=labutil.env(REPLYX_ARTIFACTS_DIR=tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # the lock is taken and the run record open: interrupt before the first change
        lines.append(line)
        if "Take the quick triage snapshot" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    out = "".join(lines) + out
    assert proc.returncode == 130, out[-4000:] + err[-2000:]
    assert "cancelling at the next safe point" in err
    assert "result: cancelled (exit 130: cancelled)" in out
    assert not LOCK.exists(), LOCK.read_text()
    report = next(tmp_path.glob("incident-*-high.md")).read_text()
    assert "- **Outcome:** CANCELLED by the operator" in report
    assert "Nothing to put back: the step failed before anything changed" in report
    report_json = next(tmp_path.glob("incident-*-high.json"))
    assert json.loads(report_json.read_text())["outcome"] == "cancelled"
    # the playbook published the outcome and the report's paths with set_stats (ansible-runner's stats event)
    stats = [json.loads(e.read_text()) for e in kept.rglob("job_events/*.json")]
    stats = [e["event_data"].get("artifact_data") for e in stats if e.get("event") == "playbook_on_stats"]
    assert len(stats) == 1 and stats[0], stats
    published = stats[0]["replyx_rollback"]
    # the playbook's own record (the CLI marks the report cancelled afterwards, keeping it as outcome_recorded)
    assert published["outcome"] == json.loads(report_json.read_text())["outcome_recorded"] == "failed"
    assert published["level"] == "high" and published["check_mode"] is False
    assert published["report"] == str(next(tmp_path.glob("incident-*-high.md")))
    assert published["report_json"] == str(report_json) and published["run_id"].endswith("-high")
    _no_secrets(json.dumps(stats))
    assert labutil.psql("select version_num from alembic_version") == head
    assert labutil.release_history("backend") == history
    _no_secrets(out + err + report)


def test_cli_finds_its_own_tools_without_the_venv_on_path(lab):
    proc = subprocess.run([str(labutil.VENV_BIN / "replyx-rollback"), "lab-status", "--limit", "postgres"],
                          cwd=labutil.ROOT, env={**labutil.env(), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "result: success (exit 0: success)" in proc.stdout
    assert "hosts: ok postgres | failed - | unreachable -" in proc.stdout


def test_cli_progress_on_a_terminal_is_one_rewritten_line(lab):
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(labutil.VENV_BIN / "replyx-rollback"), "lab-status"], cwd=labutil.ROOT,
                            env=labutil.env(), stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = out.decode(errors="replace")
    # the status line: elapsed time, tasks done per host, the current task; rewritten with a carriage return
    assert re.search(r"\r\[ *\d+\.\ds\] postgres \d+ tasks \| Ask whether PostgreSQL accepts connections", text), text[-2000:]
    assert "  - Ask whether PostgreSQL accepts connections" not in text  # no plain task lines on a terminal
    assert "result: success (exit 0: success)" in text


def test_cli_works_from_a_non_editable_install(lab, tmp_path):
    """`pip install .` (not -e) into a fresh venv: the package finds the project from --project-dir or
    REPLYX_ROLLBACK_PROJECT (and says so when it cannot)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    main_site = next(labutil.ROOT.joinpath(".venv").resolve().glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text(f"{main_site}\n")  # the dependencies, without the editable install
    env = labutil.env(drop=("PYTHONPATH", "REPLYX_ROLLBACK_PROJECT"))
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(labutil.ROOT)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import replyx_rollback.runner as r; print(r.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site))  # the installed copy, not the checkout
    env["PATH"] = "/usr/bin:/bin"
    lost = subprocess.run([str(venv / "bin" / "replyx-rollback"), "lab-status"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert lost.returncode == 2 and "--project-dir" in lost.stderr and "REPLYX_ROLLBACK_PROJECT" in lost.stderr
    ok = subprocess.run([str(venv / "bin" / "replyx-rollback"), "--project-dir", str(labutil.ROOT), "lab-status"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "result: success (exit 0: success)" in ok.stdout


def test_cli_rejects_bad_input_naming_the_choices(tmp_path):
    proc = _run("replyx-rollback", "run", "urgent")
    assert proc.returncode == 2
    assert "invalid choice: 'urgent'" in proc.stderr and "critical" in proc.stderr and "auto" in proc.stderr
    proc = _run("replyx-rollback", "-i", "inventories/nope", "plan", "critical", "--json")
    assert proc.returncode == 2
    assert "inventory 'inventories/nope' not found" in proc.stderr and "inventories/lab-fleet" in proc.stderr
    assert json.loads(proc.stdout)["exit_meaning"].startswith("usage error")
    proc = _run("replyx-rollback", "plan", "critical", "-e", "no value")
    assert proc.returncode == 2 and "must be key=value, a JSON object or @file" in proc.stderr
    proc = _run("replyx-rollback", "run", "critical", "--recovery", "later")
    assert proc.returncode == 2 and "invalid choice: 'later'" in proc.stderr and "pitr" in proc.stderr
    proc = _run("replyx-rollback", "run", "high", "--recovery", "pitr")
    assert proc.returncode == 2 and "--recovery pitr is only for level critical (got high)" in proc.stderr
    proc = _run("replyx-rollback", "plan", "critical", "--recovery", "restore")
    assert proc.returncode == 2 and "--recovery restore needs --recovery-backup MANIFEST" in proc.stderr
    proc = _run("replyx-rollback", "restore", "--backup", "x.manifest.json", "--mode", "tables")
    assert proc.returncode == 2 and "--mode tables needs --tables" in proc.stderr
    proc = _run("replyx-rollback", "restore", "--backup", "x.manifest.json", "--method", "fast")
    assert proc.returncode == 2 and "invalid choice: 'fast'" in proc.stderr and "physical" in proc.stderr


def test_cli_approve_signs_the_digest_for_the_run(tmp_path):
    """replyx-rollback approve: ssh-keygen -Y sign -n replyx-rollback over the digest, checked at once when asked;
    run/restore/pitr pass --signature files (absolute) and --ticket to the playbook."""
    from replyx_rollback import cli  # noqa: PLC0415

    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text('alice@replyx namespaces="replyx-rollback" '
                       + " ".join(key.with_suffix(".pub").read_text().split()[:2]) + "\n")
    digest = "ab" * 32
    proc = _run("replyx-rollback", "approve", "--digest", "sha256:" + digest, "--key", str(key), "-o", "alice.sig",
                "--allowed-signers", str(allowed), "--principal", "alice@replyx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Good "replyx-rollback" signature for alice@replyx' in proc.stdout
    assert f"approval written: {tmp_path / 'alice.sig'}" in proc.stdout and "--signature alice.sig" in proc.stdout
    # what the plan checks: the file verifies for the digest with or without a final newline
    verify = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "alice@replyx", "-n",
                             "replyx-rollback", "-s", str(tmp_path / "alice.sig")], input=digest + "\n",
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr
    wrong = _run("replyx-rollback", "approve", "--digest", digest, "--key", str(key), "-o", "bob.sig",
                 "--allowed-signers", str(allowed), "--principal", "bob@replyx", cwd=tmp_path)
    assert wrong.returncode == 1 and "does not verify for bob@replyx" in wrong.stderr
    assert not (tmp_path / "bob.sig").exists()
    short = _run("replyx-rollback", "approve", "--digest", "abc", "--key", str(key), cwd=tmp_path)
    assert short.returncode == 2 and "must be the 64 hex digits the plan prints after 'Plan digest:'" in short.stderr
    nokey = _run("replyx-rollback", "approve", "--digest", digest, "--key", str(tmp_path / "nope"), cwd=tmp_path)
    assert nokey.returncode == 2 and "key" in nokey.stderr and "not found" in nokey.stderr

    args = cli.build_parser().parse_args(["run", "critical", "--signature", str(tmp_path / "alice.sig"),
                                          "--ticket", "INC-11"])
    playbook, extravars, check = cli._request(args)
    assert extravars["approval_signatures"] == [str(tmp_path / "alice.sig")] and extravars["ticket"] == "INC-11"
    args = cli.build_parser().parse_args(["pitr", "--target-time", "2026-11-24 05:40:00+00", "--signature",
                                          str(tmp_path)])
    assert cli._request(args)[1]["approval_signatures"] == [str(tmp_path)]


def test_cli_passes_the_restore_method():
    from replyx_rollback import cli  # noqa: PLC0415
    from ansible_collections.replyx.rollback.plugins.module_utils._policy import RESTORE_METHODS  # noqa: PLC0415

    assert cli.RESTORE_METHODS == RESTORE_METHODS
    args = cli.build_parser().parse_args(["restore", "--backup", "/b/base.manifest.json", "--method", "physical"])
    assert cli._request(args)[:2] == ("restore.yml", {"recovery_backup": "/b/base.manifest.json",
                                                      "restore_method": "physical"})
    args = cli.build_parser().parse_args(["restore", "--backup", "/b/x.manifest.json"])
    assert "restore_method" not in cli._request(args)[1]  # the policy's default: auto
    args = cli.build_parser().parse_args(["run", "critical", "--recovery", "restore", "--recovery-backup", "/b/x",
                                          "--restore-method", "logical"])
    assert cli._request(args)[1]["restore_method"] == "logical"


def test_exit_codes_are_distinct_and_documented():
    from replyx_rollback import runner  # noqa: PLC0415

    codes = runner.EXIT_CODES
    assert len(set(codes)) == len(codes) == 8
    help_text = _run("replyx-rollback", "--help").stdout
    doc = (labutil.ROOT / "docs" / "cli.md").read_text()
    for code, meaning in codes.items():
        assert f"{code} {meaning}" in " ".join(help_text.split()), code
        assert f"| {code} |" in doc, code


def _result(playbook="rollback.yml", **kw):
    from replyx_rollback import runner  # noqa: PLC0415

    return runner.classify(runner.RunResult(playbook=playbook, status="failed", rc=2, **kw))


def test_exit_code_of_each_way_a_rollback_ends():
    """The codes a full failed rollback would need a fault for, from the run record the playbook sets
    (rollback_run_state / rollback_run_failed_phase, as rescue.yml writes them)."""
    opened = {"started_at": "2026-12-03T09:00:00Z", "outcome": "failed"}
    assert _result() == 3  # no run record: stopped while planning, by the approvals or by the lock
    assert _result("pitr.yml") == _result("restore.yml") == 3  # a PITR target outside the window, a bad checksum
    assert _result(state=dict(opened, rescue_outcome="restored")) == 5
    assert _result(state=dict(opened, rescue_outcome="nothing_to_undo")) == 5
    assert _result(state=dict(opened, rescue_outcome="not_safe")) == 1
    assert _result(state=dict(opened, rescue_outcome="failed")) == 1
    assert _result(state=dict(opened, rescue_outcome="nothing_to_undo"), failed_phase="validate") == 6
    assert _result(state=opened, unreachable={"workers": "refused"}) == 4
    assert _result(state=opened, cancelled=True) == 130


def test_quick_health_and_db_check_on_the_lab(lab):
    health = _run("replyx-quick", "health")
    assert health.returncode == 0 and '"status":"ok"' in health.stdout.replace(" ", "")
    db = _run("replyx-quick", "db-check")
    assert db.returncode == 0, db.stderr
    assert '"db": "chatai"' in db.stdout and "PostgreSQL 18" in db.stdout
    for secret in labutil.SECRETS:
        assert secret not in db.stdout + db.stderr
    logs = _run("replyx-quick", "logs", "-n", "3")
    assert logs.returncode == 0 and len(logs.stdout.strip().splitlines()) == 3


def test_quick_health_fails_clearly_when_the_backend_is_unreachable():
    proc = _run("replyx-quick", "health", REPLYX_BACKEND_PORT=1)
    assert proc.returncode != 0
    assert "Failed to connect to 127.0.0.1 port 1" in proc.stdout + proc.stderr


def test_quick_names_the_host_that_is_down_and_the_others_still_answer(lab):
    proc = _run("replyx-quick", "--host", "local", "--host", "nobody@127.0.0.1:1", "health")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert '"status":"ok"' in proc.stdout.replace(" ", "")
    assert "Failed to run health on nobody@127.0.0.1:1" in proc.stderr
    assert "health: 1 of 2 host(s) passed; failed: nobody@127.0.0.1:1" in proc.stdout
    assert _run("replyx-quick", "--version").stdout.startswith("replyx-quick ")


def test_fab_health_exits_non_zero_when_the_check_fails():
    proc = _run("fab", "health", REPLYX_BACKEND_PORT=1)
    assert proc.returncode != 0
    assert "Failed to connect to 127.0.0.1 port 1" in proc.stdout + proc.stderr


def test_db_check_reads_the_env_file_as_data_never_as_shell_code(lab, tmp_path):
    marker = tmp_path / "executed"
    env_file = tmp_path / ".env"
    env_file.write_text(f"# app settings\nexport DATABASE_URL='{labutil.APP_DSN}'\nX=$(touch {marker})\n`touch {marker}`\n")
    proc = _run("python", "-m", "replyx_rollback.quick", "_psql", "--env-file", str(env_file), "SELECT 1 AS ok")
    assert proc.returncode == 0, proc.stderr
    assert '"ok": "1"' in proc.stdout
    assert not marker.exists()
    for secret in labutil.SECRETS:
        assert secret not in proc.stdout + proc.stderr


def test_a_cancelled_run_is_marked_in_the_report_files_and_in_the_published_stats(tmp_path):
    from replyx_rollback.runner import RunResult, mark_report_cancelled  # noqa: PLC0415
    md, js = tmp_path / "incident-1-high.md", tmp_path / "incident-1-high.json"
    md.write_text("# Incident\n\n- **Outcome:** FAILED\n")
    js.write_text(json.dumps({"outcome": "failed", "run_id": "1-high"}))
    result = RunResult("rollback.yml", report=str(md), report_json=str(js), cancelled=True,
                       stats_data={"replyx_rollback": {"outcome": "failed", "report": str(md)}, "other": 1})
    mark_report_cancelled(result)
    assert "- **Outcome:** CANCELLED by the operator" in md.read_text()
    assert "the playbook recorded FAILED" in md.read_text()
    assert json.loads(js.read_text()) == {"outcome": "cancelled", "outcome_recorded": "failed", "cancelled": True,
                                          "run_id": "1-high"}
    assert result.stats_data == {"other": 1, "replyx_rollback": {"outcome": "cancelled", "outcome_recorded": "failed",
                                                                 "cancelled": True, "report": str(md)}}
