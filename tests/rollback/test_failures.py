"""Failures injected mid-run: the rescue runs, the data is unchanged, the report records the failure
and the escalation, the lock is released, the run exits non-zero. And no secret anywhere.
A release that will not start and a downgrade that fails (at its first statement, and half-way): the catalogue in
tests/reliability/test_faults.py (one machine) and the drills of molecule/chaos (real hosts behind HAProxy)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import labutil
from tests.rollback.conftest import APPROVALS, LOCK_FILE, deploy, fingerprints, git_tag, lab_state, reports, rollback

pytestmark = pytest.mark.lab


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_webhook_gets_start_and_outcome_and_the_token_stays_secret(baseline, artifacts):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = "T0KEN-hooks-9f8e7d"
    url = f"http://127.0.0.1:{server.server_address[1]}/services/{token}"
    _Receiver.received.clear()
    try:
        deploy("bad")
        proc = rollback("-e", "level=medium", "-e", "component=backend", "-e", f"approvals={APPROVALS['medium']}",
                        "-v", artifacts=artifacts, REPLYX_WEBHOOK_URL=url)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stdout[-4000:]
    texts = [m[1].get("text", "") for m in _Receiver.received]
    assert len(texts) >= 2
    assert "started" in texts[0] and "success" in texts[-1].lower()
    assert all(path.endswith(token) for path, _ in _Receiver.received)
    everything = proc.stdout + proc.stderr + "".join(p.read_text() for p in artifacts.rglob("*") if p.is_file())
    assert token not in everything
    for secret in labutil.SECRETS:
        assert secret not in everything


def test_a_killed_run_is_reported_taken_over_only_when_asked_and_resumed(baseline, artifacts):
    """The control process SIGKILLed in the middle of a high rollback (after the code switch): the lock
    stays, a new run is refused with the holder's age and that its process is gone, takes it over only
    with takeover_stale_lock=true, finishes the rollback from the live state, and its report records
    both runs. No row lost."""
    deploy("bad")
    data_before = fingerprints()
    args = ("-e", "level=high", "-e", "target=widget_version", "-e", f"approvals={APPROVALS['high']}")
    killed = subprocess.Popen([str(labutil.VENV_BIN / "ansible-playbook"), "playbooks/rollback.yml", *args],
                              cwd=labutil.ROOT, env=labutil.env(REPLYX_ARTIFACTS_DIR=artifacts),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while git_tag(labutil.APP_DIR) == "v1.2.0" and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    time.sleep(0.5)
    assert LOCK_FILE.exists(), "the killed run's lock is gone"
    held = json.loads(LOCK_FILE.read_text())
    assert held["pid"] == killed.pid
    assert not reports(artifacts), "the killed run wrote a report"

    refused = rollback(*args, artifacts=artifacts)
    out = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode != 0
    assert f"held by lead (run {held['run_id']}, level high) since {held['acquired_at']} (held for " in out, out[-3000:]
    assert f"holder PID {killed.pid} on {held['host']} is gone" in out
    assert "set takeover_stale=true to take it over" in out
    assert json.loads(LOCK_FILE.read_text()) == held and not reports(artifacts)

    resumed = rollback(*args, "-e", "takeover_stale_lock=true", artifacts=artifacts)
    assert resumed.returncode == 0, resumed.stdout[-5000:]
    state = lab_state()
    assert (state["backend"], state["revision"], state["widget_column"]) == ("v1.0.0", "fb3228f45466", "0")
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert fingerprints() == data_before
    assert not LOCK_FILE.exists()
    report = " ".join(reports(artifacts)[-1].read_text().split())
    assert f"Earlier run {held['run_id']} (level high, lead) took the lock" in report
    assert f"Took over the lock of run {held['run_id']}" in report and "is gone" in report
    assert "**Outcome:** SUCCESS" in report
