"""Bad input to rollback.yml: a clear error naming the valid choices, exit non-zero, nothing changed,
no lock left behind. Check mode of every level prints the plan and changes nothing."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests import labutil
from tests.rollback.conftest import APPROVALS, LOCK_FILE, backups, lab_state, rollback

pytestmark = pytest.mark.lab


def _flat(proc) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


# The policy's refusals (levels, components, targets, approvals, windows) are table-driven unit tests of
# module_utils/_policy.py (tests/unit/plugins/module_utils/test_policy.py). Here: one of them end to end,
# to show the wiring (exit non-zero, the message, nothing changed, no lock, no artifact), and the refusals
# only the lab can produce (a revision alembic does not know, a backup that is not there).
@pytest.mark.parametrize("args, message", [
    (["-e", "level=urgent"], "unknown level 'urgent'. Valid levels: critical, high, medium, low, auto"),
    (["-e", "level=high", "-e", "target=widget_version", "-e", "approvals=lead:team_lead:INC-2"],
     "two distinct approvers, because this rollback can lose data (the downgrade drops data)"),
    (["-e", "level=high", "-e", "target=nosuchrev", "-e", f"approvals={APPROVALS['high']}"], "nosuchrev"),
    (["-e", "level=critical", "-e", "stable_release=v9.9.9", "-e", f"approvals={APPROVALS['critical']}"],
     "unknown backend release 'v9.9.9' (not in the repository of backend). Valid releases: v1.0.0, v1.1.0, "),
    (["-e", "level=medium", "-e", "component=database", "-e", f"approvals={APPROVALS['medium']}"],
     "unknown component 'database'. Valid components: backend, workers, config, dependencies, worker_config, indexes"),
    (["-e", "level=low", "-e", "target=pgvector_indexes", "-e", "window=tomorrow"],
     "window must be 'now' (execute a planned rollback) or unset (got 'tomorrow')"),
    (["-e", "level=high", "-e", "target=widget_version", "-e", "rollback_batch=0", "-e", f"approvals={APPROVALS['high']}"],
     "rollback_batch must be a number of hosts (1 or more) or a percentage of the hosts (1%-100%)"),
    (["-e", "level=critical", "-e", "recovery=pitr", "-e", "approvals=ceo:executive:INC-1,cto:executive:INC-1"],
     "recovery must be none, restore (with -e recovery_backup=<manifest>) or pitr (with -e recovery_target_time="),
    (["-e", "level=critical", "-e", "recovery=restore", "-e", "recovery_backup=/nonexistent/backup.manifest.json",
      "-e", "approvals=ceo:executive:INC-1,cto:executive:INC-1"], "Failed to"),
])
def test_bad_input_is_refused_before_anything_changes(baseline, artifacts, args, message):
    before, backups_before = lab_state(), backups()
    proc = rollback(*args, artifacts=artifacts)
    assert proc.returncode != 0
    assert message in _flat(proc), _flat(proc)[-3000:]
    assert lab_state() == before
    assert backups() == backups_before
    assert not LOCK_FILE.exists()
    assert list(artifacts.iterdir()) == []


@pytest.mark.parametrize("component, path", [
    ("config", labutil.APP_DIR / ".env.backup"),
    ("worker_config", labutil.WORKERS_APP_DIR / "config" / "production.json.backup"),
])
def test_a_configuration_rollback_without_a_backup_is_refused_naming_the_file(baseline, artifacts, component, path):
    aside = path.with_name(path.name + ".aside")
    if path.exists():
        path.rename(aside)
    try:
        before = lab_state()
        proc = rollback("-e", "level=medium", "-e", f"component={component}", "-e", f"approvals={APPROVALS['medium']}",
                        artifacts=artifacts)
        out = _flat(proc)
        assert proc.returncode != 0
        assert f"{path} does not exist on " in out and "there is no previous configuration to restore" in out, out[-2000:]
        assert lab_state() == before and not LOCK_FILE.exists() and list(artifacts.iterdir()) == []
    finally:
        if aside.exists():
            aside.rename(path)


def test_pitr_target_outside_the_window_names_the_window(baseline, artifacts):
    proc = rollback("-e", "level=critical", "-e", "recovery=pitr", "-e", "recovery_target_time=2001-01-01 00:00:00+00",
                    "-e", "approvals=ceo:executive:INC-1,cto:executive:INC-1", artifacts=artifacts)
    out = _flat(proc)
    assert proc.returncode != 0
    assert "recover" in out.lower() and ("window" in out.lower() or "base backup" in out.lower()), out[-2000:]


def test_a_second_rollback_while_one_holds_the_lock_changes_nothing(baseline, artifacts):
    holder = {"environment": "lab", "path": str(LOCK_FILE), "run_id": "other-run", "owner": "alice", "level": "high"}
    take = subprocess.run([str(labutil.VENV_BIN / "ansible"), "localhost", "-m", "replyx.rollback.rollback_lock",
                           "-a", json.dumps(holder)], cwd=labutil.ROOT, env=labutil.env(), capture_output=True, text=True)
    assert take.returncode == 0, take.stdout
    lock_before = LOCK_FILE.read_text()
    before = lab_state()
    proc = rollback("-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}", artifacts=artifacts)
    out = _flat(proc)
    assert proc.returncode != 0
    assert "Failed to acquire rollback lock lab: held by alice (run other-run, level high) since" in out
    assert LOCK_FILE.read_text() == lock_before
    assert lab_state() == before
    release = subprocess.run([str(labutil.VENV_BIN / "ansible"), "localhost", "-m", "replyx.rollback.rollback_lock",
                              "-a", json.dumps(dict(holder, state="released"))], cwd=labutil.ROOT, env=labutil.env(),
                             capture_output=True, text=True)
    assert release.returncode == 0 and not LOCK_FILE.exists()


CHECK_MODE_RUNS = [
    ["-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}"],
    ["-e", "level=high", "-e", "target=widget_version", "-e", f"approvals={APPROVALS['high']}"],
    ["-e", "level=medium", "-e", "component=indexes", "-e", f"approvals={APPROVALS['medium']}"],
    ["-e", "level=medium", "-e", "component=config", "-e", f"approvals={APPROVALS['medium']}"],
    ["-e", "level=low", "-e", "target=pgvector_indexes"],
    ["-e", "level=auto", "-e", f"approvals={APPROVALS['high']}"],
]


def test_check_mode_of_every_level_prints_the_plan_and_changes_nothing(baseline, artifacts):
    labutil.playbook("deploy.yml", "-e", "release=bad", check=True)
    before, backups_before = lab_state(), backups()
    for args in CHECK_MODE_RUNS:
        proc = rollback(*args, "--check", artifacts=artifacts)
        if "level=auto" in args and proc.returncode != 0:
            # without a recorded baseline auto may find only a failing check; it must still change nothing
            assert "level=auto" in _flat(proc)
        else:
            assert proc.returncode == 0, (args, proc.stdout[-4000:])
            assert "CHECK MODE: nothing will change" in proc.stdout
            assert "Steps:" in proc.stdout
            # planning previews (alembic in check mode) but reports no change: nothing will change
            assert {h: c["changed"] for h, c in labutil.recap(proc.stdout).items() if c["changed"]} == {}, args
        assert lab_state() == before, args
        assert backups() == backups_before, args
        assert not LOCK_FILE.exists(), args
        assert list(artifacts.iterdir()) == [], args
