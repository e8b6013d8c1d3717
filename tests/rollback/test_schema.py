"""Code rollbacks across migrations: the plan compares the head revision of the release it deploys with the
database's revision. When the older release runs on the newer schema (the revisions between only add), the
rollback goes on and says the schema stays ahead; otherwise it is refused before the lock, naming the high level.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import labutil
from tests.rollback.conftest import (APPROVALS, LOCK_FILE, fingerprints, lab_backend_repo, lab_state, publish_release,
                                     reports, rollback)

pytestmark = pytest.mark.lab

HISTORIES = [labutil.LAB_ROOT / app / "release_history.json" for app in ("backend", "workers")]


@pytest.fixture
def kept_histories(baseline):
    """These scenarios roll back FROM v1.1.0 (the baseline's good release), which marks it bad for every
    later plan: the release histories are put back as they were once the scenario is done."""
    saved = {p: p.read_bytes() for p in HISTORIES if p.exists()}
    yield
    for path, content in saved.items():
        path.write_bytes(content)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc


def test_critical_to_a_release_older_than_the_schema_goes_on_and_says_the_schema_stays_ahead(
        kept_histories, artifacts):
    """v1.1.0 runs at a1b2c3d4e5f6; the last good release before it, v1.0.0, runs at fb3228f45466. The one
    migration between (a1b2c3d4e5f6) only adds a defaulted column, so v1.0.0 runs on this schema."""
    data_before = fingerprints()
    plan = _ok(rollback("-e", "level=critical", "--check", artifacts=artifacts))
    flat = " ".join(plan.stdout.split())
    assert "Schema: stays at a1b2c3d4e5f6, ahead of release v1.0.0 (which runs at fb3228f45466): a1b2c3d4e5f6 only adds" \
        in flat, flat[-3000:]
    proc = _ok(rollback("-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}", artifacts=artifacts))
    state = lab_state()
    assert (state["backend"], state["revision"], state["widget_column"]) == ("v1.0.0", "a1b2c3d4e5f6", "1")
    assert labutil.http_json(labutil.BACKEND_URL + "/health")[0] == 200
    assert fingerprints() == data_before
    report = reports(artifacts)[-1].read_text()
    assert "**Outcome:** SUCCESS" in report
    assert "| backend release | v1.1.0 | v1.0.0 |" in report
    assert "| alembic revision | a1b2c3d4e5f6 | a1b2c3d4e5f6 |" in report
    assert "Schema: stays at a1b2c3d4e5f6, ahead of release v1.0.0" in report
    assert "[WARNING]" not in proc.stdout + proc.stderr
    entry = labutil.release_history("backend")[-1]
    assert (entry["tag"], entry["result"], entry["rolled_back_from"]) == ("v1.0.0", "rollback", "v1.1.0")


_RENAME_MIGRATION = '''"""rename widget_version

Revision ID: b5c6d7e8f9a0
Revises: a1b2c3d4e5f6
"""
from alembic import op

revision = "b5c6d7e8f9a0"
down_revision = "a1b2c3d4e5f6"
branch_labels = None
depends_on = None

downgrade_drops_data = []
# a rename: the previous release, which reads widget_version, cannot run on this schema
additive = False


def upgrade() -> None:
    op.alter_column("assistants", "widget_version", new_column_name="widget_release")


def downgrade() -> None:
    op.alter_column("assistants", "widget_release", new_column_name="widget_version")
'''


def _publish_rename_release(tag: str) -> None:
    """v1.1.0 + a migration that renames assistants.widget_version: not additive (code that reads the old
    name fails on the new schema), and its downgrade drops no data."""
    def add_migration(work: Path) -> None:
        (work / "alembic" / "versions" / "b5c6d7e8f9a0_rename_widget_version.py").write_text(_RENAME_MIGRATION)
    publish_release(lab_backend_repo(), tag, add_migration, "rename widget_version")


def test_a_release_that_cannot_run_on_the_schema_is_refused_before_the_lock_naming_the_high_level(
        kept_histories, artifacts):
    _publish_rename_release("v1.1.1-rename")
    labutil.playbook("deploy.yml", "-e", "app=backend", "-e", "release=v1.1.1-rename", check=True)
    before = lab_state()
    assert (before["backend"], before["revision"]) == ("v1.1.1-rename", "b5c6d7e8f9a0")
    data_before = fingerprints()
    history_before = labutil.release_history("backend")

    proc = rollback("-e", "level=critical", "-e", f"approvals={APPROVALS['critical']}", artifacts=artifacts)
    flat = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    for text in ("release v1.1.0 runs at alembic revision a1b2c3d4e5f6, but the database is at b5c6d7e8f9a0 and "
                 "b5c6d7e8f9a0 between them is not declared additive, so v1.1.0 cannot run on this schema",
                 "-e level=high -e target=a1b2c3d4e5f6 -e stable_release=v1.1.0"):
        assert text in flat, flat[-3000:]
    assert lab_state() == before
    assert fingerprints() == data_before
    assert labutil.release_history("backend") == history_before
    assert not LOCK_FILE.exists()
    assert not reports(artifacts)

    # the way it names: the high level downgrades the schema and deploys v1.1.0 with it
    _ok(rollback("-e", "level=high", "-e", "target=a1b2c3d4e5f6", "-e", "stable_release=v1.1.0",
                 "-e", f"approvals={APPROVALS['high']}", artifacts=artifacts))
    state = lab_state()
    assert (state["backend"], state["revision"], state["widget_column"]) == ("v1.1.0", "a1b2c3d4e5f6", "1")
    assert fingerprints() == data_before
