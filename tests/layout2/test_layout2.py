"""Issue 14: every procedure follows the inventory's database name, users, roots and ports. On the second
layout (the lab root, the checkout the playbooks run from, the backups and the artifacts all under paths with
a space, quotes and a non-ASCII character; issue 11): backup -> preflight passes; triage and validate pass; a high rollback ends on the good release and
revision with the data unchanged; nothing produced for the layout names `chatai` or the default lab's root.
The tests share one lab (conftest.py) and run in this order."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests import labutil
from tests.layout2.conftest import LAYOUT

pytestmark = pytest.mark.lab

HIGH_APPROVALS = "lead:team_lead:INC-2,dba:executive:INC-2"
PITR_APPROVALS = "dba:executive:INC-9,lead:team_lead:INC-9"
DATA_TABLES = ("users", "dialogs", "dialog_messages", "knowledge_embeddings", "balance_transactions", "ai_token_usage")
# What must never show up for this layout: the default lab's names and root (with its slash: the
# layout's own root, .lab-layout2, starts with .lab).
FORBIDDEN = tuple({"chatai", f"{labutil.ROOT / '.lab'}/", f"{labutil.LAB_ROOT}/"})


def git_tag(app_dir) -> str:
    return subprocess.run(["git", "-C", str(app_dir), "describe", "--tags", "--exact-match", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def fingerprints() -> dict:
    return {t: LAYOUT.psql(f"select count(*) || ':' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '') "
                           f"from {t} x") for t in DATA_TABLES}


def pm2_names(host: str) -> list[str]:
    out = subprocess.run([str(labutil.PM2), "jlist"], capture_output=True, text=True,
                         env=dict(os.environ, PM2_HOME=str(LAYOUT.host_roots[host] / "pm2"))).stdout
    return sorted(p["name"] for p in json.loads(out[out.index("["):]) if p["pm2_env"]["status"] == "online")


def test_the_lab_follows_the_inventory(l2):
    assert LAYOUT.psql("select current_database()") == "replyx_prod"
    assert labutil.psql("select current_user", LAYOUT.app_dsn) == "replyx_app"
    assert LAYOUT.psql("select count(*) from pg_database where datname = 'chatai'") == "0"
    assert LAYOUT.psql("select count(*) from pg_roles where rolname = 'chatai'") == "0"
    assert LAYOUT.psql("show data_directory") == str(LAYOUT.host_roots["postgres"] / "data")
    assert LAYOUT.psql("show archive_mode") == "on"
    assert labutil.http_json(LAYOUT.backend_url + "/health")[0] == 200
    assert labutil.http_json(LAYOUT.workers_url + "/status")[0] == 200
    assert pm2_names("backend") == ["replyx-api"] and pm2_names("workers") == ["replyx-bots"]
    assert git_tag(LAYOUT.app_dir) == "v1.1.0" and LAYOUT.alembic_current() == "a1b2c3d4e5f6"


def test_backup_then_preflight_passes(l2):
    l2.run("backup.yml", check=True)
    l2.run("backup.yml", "-e", "backup_kind=physical", check=True)
    run = l2.run("preflight.yml", check=True)
    assert "Preflight passed" in run.stdout
    result = json.loads(sorted(l2.artifacts.glob("preflight-*.json"))[-1].read_text())
    assert result["passed"] is True and result["backup"]["verified"] is True
    assert result["backup"]["name"].startswith("replyx_prod-")
    assert result["base_backup"]["kind"] == "physical" and result["wal_archiving"]["enabled"] is True
    backups = sorted(p.name for p in (LAYOUT.host_roots["postgres"] / "backups").glob("*.manifest.json"))
    assert backups and all(name.startswith("replyx_prod-") for name in backups)


def test_triage_and_validate_pass(l2):
    run = l2.run("triage.yml", check=True)
    triage = json.loads(sorted(l2.artifacts.glob("triage-*.json"))[-1].read_text())
    assert triage["environment"] == "lab-layout2", triage
    assert triage["healthy"] is True, run.stdout[-3000:]
    run = l2.run("validate.yml", check=True)
    assert "[WARNING]" not in run.stdout + run.stderr


def test_high_rollback_ends_on_the_good_release_with_the_data_intact(l2):
    l2.run("deploy.yml", "-e", "app=backend", "-e", "release=bad", check=True)
    assert git_tag(LAYOUT.app_dir) == "v1.2.0"
    data_before = fingerprints()
    proc = l2.run("rollback.yml", "-e", "level=high", "-e", "target=widget_version",
                  "-e", f"approvals={HIGH_APPROVALS}", "-v", check=True)
    # run from the copy of the checkout under a path with a space, quotes and non-ASCII characters
    assert LAYOUT.project != labutil.ROOT and f"Using {LAYOUT.project / 'ansible.cfg'} as config file" in proc.stdout
    assert git_tag(LAYOUT.app_dir) == "v1.0.0"
    assert LAYOUT.psql("select version_num from alembic_version") == "fb3228f45466"
    assert LAYOUT.psql("select count(*) from information_schema.columns where table_name = 'assistants' "
                       "and column_name = 'widget_version'") == "0"
    assert labutil.http_json(LAYOUT.backend_url + "/health")[0] == 200
    assert fingerprints() == data_before
    history = LAYOUT.release_history("backend")
    assert history[-1]["tag"] == "v1.0.0" and history[-1]["result"] == "rollback"
    report = sorted(l2.artifacts.glob("incident-*.md"), key=lambda p: p.stat().st_mtime)[-1].read_text()
    for text in ("**Severity:** HIGH", "**Outcome:** SUCCESS", "**Environment:** lab-layout2",
                 "a1b2c3d4e5f6 -> fb3228f45466", "Backend code v1.2.0 -> v1.0.0"):
        assert text in report, text
    assert not list(LAYOUT.host_roots["postgres"].glob("rollback-*.lock.json"))
    assert "[WARNING]" not in proc.stdout + proc.stderr
    pre = [p.name for p in (LAYOUT.host_roots["postgres"] / "backups").glob("*pre-rollback*.manifest.json")]
    assert pre and all(name.startswith("replyx_prod-") for name in pre), pre


def test_pitr_to_a_time_between_two_writes(l2):
    """Point-in-time recovery with the data directory, the WAL archive and the base backup under a root
    with a space, a quote and a non-ASCII character (issue 11): back to a time between two writes, and
    archiving on again afterwards."""
    LAYOUT.psql("create table pitr_probe(id int primary key)")
    LAYOUT.psql("insert into pitr_probe select generate_series(1, 100)")
    time.sleep(1.5)
    target = LAYOUT.psql("select now()")
    time.sleep(1.5)
    LAYOUT.psql("insert into pitr_probe select generate_series(101, 200)")
    LAYOUT.psql("select pg_switch_wal()")
    time.sleep(3)
    l2.run("pitr.yml", "-e", f"recovery_target_time='{target}'", "-e", f"approvals={PITR_APPROVALS}", check=True)
    assert LAYOUT.psql("select count(*), max(id) from pitr_probe") == "100|100"
    assert LAYOUT.psql("select pg_is_in_recovery()") == "False"
    assert LAYOUT.psql("show archive_mode") == "on"
    LAYOUT.psql("drop table pitr_probe")


def test_nothing_names_chatai_or_the_default_lab(l2):
    """Every output of the runs above, every artifact and every path under the layout's root."""
    assert len(l2.runs) >= 8
    found = []
    for what, proc in l2.runs:
        for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            found += [f"{what} {stream}: {word!r}" for word in FORBIDDEN if word in text]
    artifacts = [p for p in l2.artifacts.rglob("*") if p.is_file()]
    assert any(p.name.startswith("incident-") for p in artifacts)
    for path in artifacts:
        text = str(path) + "\n" + path.read_text(errors="replace")
        found += [f"artifact {path.name}: {word!r}" for word in FORBIDDEN if word in text]
    paths = [str(p) for p in LAYOUT.root.rglob("*")]
    assert len(paths) > 100
    found += [f"path {p}" for p in paths if any(word in p + "/" for word in FORBIDDEN)]
    assert not found, found[:20]
