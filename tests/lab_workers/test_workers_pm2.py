"""The bot manager under PM2 (the plan's `pm2 restart chatai-bot-manager`), with a private PM2_HOME."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from .conftest import PM2, free_port, port_is_open, status_where, wait_for, worker_pids, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120),
              pytest.mark.skipif(not os.access(PM2, os.X_OK), reason=f"pm2 is not installed at {PM2}")]
NAME = "chatai-bot-manager"


def test_runs_and_restarts_under_pm2(app_factory, tmp_path):
    app = app_factory.app()
    port = free_port()
    write_config(app, port)
    env = dict(os.environ, PM2_HOME=str(tmp_path / "pm2home"))

    def pm2(*args, check=True):
        return subprocess.run([str(PM2), *args], cwd=app, env=env, capture_output=True, text=True,
                              timeout=60, check=check)

    try:
        # kill_timeout as the workers' ecosystem file sets it: PM2's default (1.6 s) SIGKILLs the manager
        # before its graceful stop is logged when the machine is loaded
        pm2("start", "scalable_bot_manager.js", "--name", NAME, "--kill-timeout", "8000")
        code, first = wait_for(status_where(port, lambda c, b: c == 200 and b["active_workers"] == 3), 20,
                               what="status ok under pm2")
        procs = json.loads(pm2("jlist").stdout)
        entry = next(p for p in procs if p["name"] == NAME)
        assert entry["pm2_env"]["status"] == "online" and entry["pid"] == first["pid"]
        old_workers = set(worker_pids(app))
        assert len(old_workers) == 3

        pm2("restart", NAME)
        code, second = wait_for(status_where(port, lambda c, b: c == 200 and b["active_workers"] == 3
                                             and b["pid"] != first["pid"]), 20, what="status ok after pm2 restart")
        new_workers = set(worker_pids(app))
        assert len(new_workers) == 3 and not (new_workers & old_workers)
        # The old manager stopped gracefully: PM2's own log (written by the daemon) records its exit code 0
        # on SIGINT. The app's last stdout lines are not evidence: PM2 may drop what the old process wrote
        # while it was being replaced.
        pm2_log = tmp_path / "pm2home" / "pm2.log"
        graceful = f"App [{NAME}:0] exited with code [0] via signal [SIGINT]"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and graceful not in pm2_log.read_text():
            time.sleep(0.5)
        assert graceful in pm2_log.read_text(), pm2_log.read_text()[-2000:]
        out_log = (tmp_path / "pm2home" / "logs" / f"{NAME}-out.log").read_text()
        assert " ERROR " not in out_log, "a PM2 restart is not a crash"
    finally:
        pm2("delete", "all", check=False)
        pm2("kill", check=False)
    wait_for(lambda: not worker_pids(app) and not port_is_open(port), 10, what="pm2 to stop everything")
