"""The application-side modules against the lab's own services: app_service restarts the lab's
PM2 apps; service_health's process check fails while the workers are stopped."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests import labutil

pytestmark = pytest.mark.lab


def module(name: str, args: dict) -> dict:
    proc = subprocess.run([str(labutil.VENV_BIN / "ansible"), "localhost", "-m", f"replyx.rollback.{name}",
                           "-a", json.dumps(args)], cwd=labutil.ROOT,
                          env=labutil.env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"),
                          capture_output=True, text=True, timeout=300)
    data = json.loads(proc.stdout)
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


def pm2(app: str, home: str, state: str, **extra) -> dict:
    return module("app_service", dict(name=app, manager="pm2", pm2_bin=str(labutil.PM2), pm2_home=home,
                                      state=state, **extra))


BACKEND_HOME = str(labutil.LAB_ROOT / "backend" / "pm2")
WORKERS_HOME = str(labutil.LAB_ROOT / "workers" / "pm2")


def test_app_service_restarts_the_lab_backend_under_pm2(lab):
    res = pm2("replyx-backend", BACKEND_HOME, "restarted", wait_url=labutil.BACKEND_URL + "/health")
    assert res["changed"] is True and not res.get("failed"), res
    assert res["old_pids"] and res["new_pids"] and set(res["old_pids"]).isdisjoint(res["new_pids"])
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200


def test_process_check_fails_while_the_workers_are_stopped(lab):
    check = dict(checks=[dict(name="bot manager", type="process", pm2_app="chatai-bot-manager",
                              pm2_bin=str(labutil.PM2), pm2_home=WORKERS_HOME, expected=1)])
    assert module("service_health", check).get("failed") is not True
    stopped = pm2("chatai-bot-manager", WORKERS_HOME, "stopped")
    try:
        assert stopped["changed"] is True
        res = module("service_health", check)
        assert res["failed"] is True
        assert res["summary"]["failed_checks"] == ["bot manager"]
    finally:
        started = pm2("chatai-bot-manager", WORKERS_HOME, "started", wait_url=labutil.WORKERS_URL + "/status")
    assert not started.get("failed"), started
    status, body = labutil.http_json(labutil.WORKERS_URL + "/status")
    assert body["expected_workers"] == 4
