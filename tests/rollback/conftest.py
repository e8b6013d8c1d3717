"""Fixtures for the rollback playbook tests: they run against the default lab, one scenario at a time."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import labutil

APPROVALS = {
    "critical": "ceo:executive:INC-1",
    "high": "lead:team_lead:INC-2,dba:executive:INC-2",
    "medium": "dev:developer:INC-3",
    "low": "ops:standard:INC-4",
}
DATA_TABLES = ("users", "dialogs", "dialog_messages", "knowledge_embeddings", "balance_transactions", "ai_token_usage")
LOCK_FILE = labutil.LAB_ROOT / "postgres" / "rollback-lab.lock.json"


def git_tag(app_dir: Path) -> str:
    out = subprocess.run(["git", "-C", str(app_dir), "describe", "--tags", "--exact-match", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def lab_backend_repo(root: Path = labutil.LAB_ROOT) -> Path:
    """The bare repository the lab's backend releases are deployed from."""
    repo = root / "backend" / "repos" / "backend.git"
    return repo if repo.exists() else root / "repos" / "backend.git"


def publish_release(repo: Path, tag: str, change: Callable[[Path], None], message: str, base: str = "v1.1.0") -> None:
    """Push `tag` to a release repository: `base` with `change(worktree)` applied on top, committed.

    A tag of the same name is replaced, so a test can publish its release again on a reused lab."""
    work = Path(tempfile.mkdtemp(prefix="replyx-release-"))
    try:
        def git(*a: str) -> None:
            subprocess.run(["git", *a], cwd=work, check=True, capture_output=True)
        git("clone", "-q", str(repo), ".")
        git("checkout", "-q", base)
        change(work)
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
        git("tag", "-f", tag)
        git("push", "-qf", "origin", tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fingerprints() -> dict:
    """md5 of every row of the data tables (the data a rollback must never lose)."""
    return {t: labutil.psql(f"select count(*) || ':' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '') "
                            f"from {t} x") for t in DATA_TABLES}


def lab_state() -> dict:
    """What a rollback may change: releases, schema revision, columns, indexes, configuration."""
    cfg = labutil.WORKERS_APP_DIR / "config" / "production.json"
    env = labutil.APP_DIR / ".env"
    return {
        "backend": git_tag(labutil.APP_DIR),
        "workers": git_tag(labutil.WORKERS_APP_DIR),
        "revision": labutil.psql("select version_num from alembic_version"),
        "widget_column": labutil.psql("select count(*) from information_schema.columns "
                                      "where table_name = 'assistants' and column_name = 'widget_version'"),
        "indexes": labutil.psql("select count(*) from pg_indexes where schemaname = 'public'"),
        "env_sha": hashlib.sha256(env.read_bytes()).hexdigest() if env.exists() else "",
        "worker_config": json.loads(cfg.read_text()) if cfg.exists() else {},
    }


def rollback(*args: str, artifacts: Path, **env) -> subprocess.CompletedProcess:
    return labutil.playbook("rollback.yml", *args, REPLYX_ARTIFACTS_DIR=artifacts, timeout=900, **env)


def deploy(release: str, app: str = "backend", *extra: str) -> None:
    labutil.playbook("deploy.yml", "-e", f"app={app}", "-e", f"release={release}", *extra, check=True)


def reports(artifacts: Path) -> list[Path]:
    return sorted(artifacts.glob("incident-*.md"), key=lambda p: p.stat().st_mtime)


def backups() -> set[str]:
    return {p.name for p in (labutil.LAB_ROOT / "postgres" / "backups").glob("*.manifest.json")}


def reset_lab() -> None:
    """Put the lab back to its baseline (backend v1.1.0 at a1b2c3d4e5f6, workers v2.0.0 with 4 workers),
    deploying only what differs."""
    state = lab_state()
    if state["backend"] != "v1.1.0" or state["revision"] != "a1b2c3d4e5f6" or state["env_sha"] != BASELINE["env_sha"]:
        deploy("v1.1.0")
    if state["workers"] != "v2.0.0" or state["worker_config"].get("workers") != 4:
        deploy("v2.0.0", "workers")
    if LOCK_FILE.exists():
        LOCK_FILE.unlink()


BASELINE: dict = {}


@pytest.fixture(scope="session")
def healthy_lab(lab):
    """The lab at its baseline, as lab.yml leaves it; its state is remembered to reset to."""
    BASELINE.update(lab_state())
    assert BASELINE["backend"] == "v1.1.0" and BASELINE["revision"] == "a1b2c3d4e5f6", BASELINE
    return BASELINE


@pytest.fixture
def baseline(healthy_lab):
    """Each scenario starts from the lab baseline and leaves it there again."""
    reset_lab()
    yield dict(healthy_lab)
    reset_lab()


@pytest.fixture
def artifacts(tmp_path):
    d = tmp_path / "artifacts"
    d.mkdir()
    return d
