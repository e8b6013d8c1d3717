"""A rollback under traffic: a logged-in client calls /api/assistants and /health every 0.1 s through
the whole level=high run. The high level switches the code first (the downgrade only drops what the
bad release added) and downgrades after, so no request fails with a 5xx because of the rollback."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests import labutil
from tests.rollback.conftest import APPROVALS, deploy, lab_state, reports, rollback

pytestmark = pytest.mark.lab


def _login() -> str:
    req = urllib.request.Request(labutil.BACKEND_URL + "/api/login", method="POST",
                                 data=json.dumps({"email": "test@example.com", "password": "testpass"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


def _get(path: str, token: str | None = None) -> int:
    req = urllib.request.Request(labutil.BACKEND_URL + path,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # refused while the process restarts: not an answer, not a 5xx


def test_high_under_traffic_causes_no_5xx(baseline, artifacts):
    deploy("bad")
    token = _login()
    answers: list[tuple[float, str, int]] = []
    stop = threading.Event()

    def client():
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            for path, tok in (("/api/assistants", token), ("/health", None)):
                answers.append((time.monotonic(), path, _get(path, tok)))
            time.sleep(0.1)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        proc = rollback("-e", "level=high", "-e", "target=widget_version", "-e", f"approvals={APPROVALS['high']}",
                        artifacts=artifacts)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert lab_state()["backend"] == "v1.0.0" and lab_state()["revision"] == "fb3228f45466"
    errors = [a for a in answers if a[2] >= 500]
    assert len(answers) > 20
    assert not errors, f"{len(errors)} answers were 5xx: {errors[:5]}"
    assert "**Outcome:** SUCCESS" in reports(artifacts)[-1].read_text()
