"""incident_report and escalation roles, through the small playbooks in tests/procedures/playbooks:
a report from a partial rollback_run_state with every secret redacted; webhook notifications to a local
receiver; nothing sent without a URL. No running lab needed."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from .conftest import SECRETS, WEBHOOK_TOKEN, mode

pytestmark = [pytest.mark.slow]

REPORT = "../tests/procedures/playbooks/report_partial.yml"
NOTIFY = "../tests/procedures/playbooks/notify.yml"


class Receiver:
    """A Slack-like incoming webhook on 127.0.0.1 (free port) that records every POST."""

    def __init__(self):
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                 "raw": body.decode(), "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/{WEBHOOK_TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _no_secret_in(text: str, where: str):
    leaked = [s for s in SECRETS + (WEBHOOK_TOKEN,) if s in text]
    assert not leaked, f"secret(s) {leaked} in {where}"


def test_report_from_partial_state_is_written_and_redacted(proc):
    run = proc.run(REPORT, check=True, REPLYX_WEBHOOK_URL=f"https://hooks.example.com/services/T0/B0/{WEBHOOK_TOKEN}")
    md = proc.artifacts / "incident-test-partial.md"
    js = proc.artifacts / "incident-test-partial.json"
    assert f"Incident report: {md}" in run.stdout
    assert mode(md) == 0o600 and mode(js) == 0o600
    text = md.read_text()
    data = json.loads(js.read_text())
    for body, where in ((text, md.name), (js.read_text(), js.name)):
        _no_secret_in(body, where)
    # the template's shape, filled from what was known
    assert text.startswith("# Database Rollback Incident - test-partial")
    for heading in ("## Summary", "## Timeline", "## Actions Taken", "## Approvals", "## Backups",
                    "## Validation checklist", "## Impact Assessment", "## Escalation", "## Lessons Learned"):
        assert heading in text
    assert "**Severity:** HIGH" in text and "**Outcome:** FAILED" in text
    assert "postgresql://postgres:[REDACTED]@db:5432/chatai" in text
    assert "alice (team_lead), ticket INC-1" in text
    assert "| alembic revision | a1b2c3d4e5f6 | - |" in text
    assert "Level 2: Product Owner + Engineering Manager (1-hour crisis meeting)" in text
    assert "validation did not run" in text and "not restored" in text
    # the timeline: real UTC times, in order, redacted
    times = [e["time"] for e in data["timeline"]]
    assert len(times) == 2 and times == sorted(times)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in times)
    assert data["timeline"][1]["what"] == "Backup of postgresql://chatai:[REDACTED]@127.0.0.1/chatai"
    assert data["timeline"][1]["outcome"] == "failed: password [REDACTED] rejected"
    assert data["level"] == "high" and data["outcome"] == "failed" and isinstance(data["duration_s"], int)
    assert data["escalation"]["who"] == "Product Owner + Engineering Manager"
    assert data["backups"] == [] and data["checklist"] == []


def test_notifications_reach_the_webhook_and_a_dead_one_does_not_fail_the_run(proc):
    with Receiver() as rx:
        run = proc.run(NOTIFY, check=True, REPLYX_WEBHOOK_URL=rx.url)
    assert "ESCALATION=2" in run.stdout
    assert [p["path"] for p in rx.posts] == ["/services/T0/B0/" + WEBHOOK_TOKEN] * 3
    assert all(p["content_type"].startswith("application/json") for p in rx.posts)
    start, escalation, failure = (p["json"] for p in rx.posts)
    assert start["text"].startswith(":rotating_light: Rollback started - ReplyX lab, run test-notify, level high")
    assert "[REDACTED]" in start["text"]  # the summary carried the database password
    assert escalation["text"].startswith(":sos: Escalation level 2")
    fields = {f["title"]: f["value"] for f in escalation["attachments"][0]["fields"]}
    assert fields["Who"] == "Product Owner + Engineering Manager"
    assert fields["Trigger"] == "Multiple rollback attempts fail"
    assert fields["Timeline"] == "1-hour crisis meeting"
    assert failure["text"].startswith(":x: Rollback failed") and failure["attachments"][0]["color"] == "danger"
    for p in rx.posts:
        _no_secret_in(p["raw"], "a webhook payload")
    # the unreachable webhook: the run went on, the report's timeline says it was not delivered
    report = (proc.artifacts / "incident-test-notify.md").read_text()
    assert "Notification 'failure' to the webhook: not delivered (HTTP -1" in report
    assert "Level 2: Product Owner + Engineering Manager" in report


def test_nothing_is_sent_without_a_webhook_url(proc):
    with Receiver() as rx:
        run = proc.run(NOTIFY, check=True, REPLYX_WEBHOOK_URL="")
    assert rx.posts == []
    assert "NOTIFIED=False" in run.stdout
    report = (proc.artifacts / "incident-test-notify.md").read_text()
    assert "Notification" not in report


def test_no_secret_in_any_artifact(proc):
    proc.run(REPORT, check=True, REPLYX_WEBHOOK_URL=f"https://hooks.example.com/services/T0/B0/{WEBHOOK_TOKEN}")
    files = proc.artifact_files()
    assert files
    for path in files:
        _no_secret_in(path.read_text(), str(path))
