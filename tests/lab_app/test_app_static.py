"""The lab backend's files, configuration loader, alembic scripts and release manifest (no server)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.lab_app.conftest import APP_SRC, PYTHON, RELEASES_DIR, assemble_release, base_env

CHAIN = ["66ea5c9e3d91", "3f9a1c2b7d45", "7b2e4d6f8a10", "165e5d314eaf", "c4132f66258f", "d8e1f2a3b4c5",
         "fb3228f45466", "a1b2c3d4e5f6"]
PLAN_INDEXES = ["idx_ai_token_usage_user_created", "ix_knowledge_embeddings_user_assistant",
                "ix_dialog_messages_dialog_id", "ix_balance_transactions_user_created"]


def scripts(app_dir=APP_SRC) -> ScriptDirectory:
    cfg = Config(str(app_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(app_dir / "alembic"))
    return ScriptDirectory.from_config(cfg)


def test_eight_migrations_in_one_linear_chain():
    sd = scripts()
    assert sd.get_heads() == ["a1b2c3d4e5f6"]
    assert sd.get_bases() == ["66ea5c9e3d91"]
    walked = [s.revision for s in sd.walk_revisions("base", "heads")]
    assert list(reversed(walked)) == CHAIN
    for script in sd.walk_revisions():
        assert script.doc and "\n" not in script.doc.strip(), script.revision
        assert Path(script.path).name.startswith(script.revision + "_"), script.path
    assert len(list((APP_SRC / "alembic" / "versions").glob("*.py"))) == 8


def test_downgrade_drops_data_markers():
    markers = {s.revision: s.module.downgrade_drops_data for s in scripts().walk_revisions()}
    assert all(isinstance(v, list) for v in markers.values()), markers
    assert markers["a1b2c3d4e5f6"] == ["assistants.widget_version"]
    assert set(markers["fb3228f45466"]) == {"assistants.ai_model", "dialogs.handoff_status",
                                            "dialogs.handoff_requested_at"}
    for index_only in ("d8e1f2a3b4c5", "c4132f66258f", "165e5d314eaf"):
        assert markers[index_only] == []
    assert markers["7b2e4d6f8a10"] == ["uploaded_files"]
    assert set(markers["3f9a1c2b7d45"]) == {"balance_transactions", "ai_token_usage"}
    assert set(markers["66ea5c9e3d91"]) == {"users", "assistants", "dialogs", "dialog_messages",
                                            "knowledge_embeddings"}


def test_performance_index_migration_names():
    module = scripts().get_revision("165e5d314eaf").module
    names = [name for name, *_ in module.INDEXES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert all(n.startswith(("ix_", "idx_")) for n in names)
    assert set(PLAN_INDEXES) <= set(names)


def test_offline_sql_without_fastapi():
    code = ("import sys; from alembic.config import Config; from alembic import command; "
            "command.upgrade(Config('alembic.ini'), 'head', sql=True); "
            "assert 'fastapi' not in sys.modules, 'env.py imported fastapi'")
    proc = subprocess.run([str(PYTHON), "-c", code], cwd=APP_SRC, capture_output=True, text=True, timeout=120,
                          env=base_env(DATABASE_URL="postgresql://chatai:pw@127.0.0.1:5999/chatai"))
    assert proc.returncode == 0, proc.stderr
    sql = proc.stdout
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    assert "USING hnsw (embedding vector_cosine_ops)" in sql
    assert "ADD COLUMN widget_version INTEGER DEFAULT '1' NOT NULL" in sql
    assert "UPDATE alembic_version SET version_num='a1b2c3d4e5f6'" in sql
    down = subprocess.run([str(PYTHON), "-m", "alembic", "downgrade", "a1b2c3d4e5f6:fb3228f45466", "--sql"],
                          cwd=APP_SRC, capture_output=True, text=True, timeout=120,
                          env=base_env(DATABASE_URL="postgresql://chatai:pw@127.0.0.1:5999/chatai"))
    assert down.returncode == 0, down.stderr
    assert "ALTER TABLE assistants DROP COLUMN widget_version" in down.stdout


def _config_check(app_dir, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYTHON), "-c", "from core.app_config import DATABASE_URL; print(DATABASE_URL)"],
                          cwd=app_dir, capture_output=True, text=True, timeout=60, env=base_env(**env))


def test_config_env_file_and_override(tmp_path):
    app = tmp_path / "backend"
    assemble_release("v1.1.0", app)
    (app / ".env").write_text("# lab\nexport DATABASE_URL='postgresql://chatai:file-pw@10.0.0.5:5432/chatai'\n"
                              "SECRET_KEY=abc # comment\nLOG_FILE=var/app.log\n")
    proc = _config_check(app)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "postgresql://chatai:file-pw@10.0.0.5:5432/chatai"
    # the environment wins; a SQLAlchemy-style URL is given back in plain libpq form
    proc = _config_check(app, DATABASE_URL="postgresql+psycopg://chatai:env-pw@127.0.0.1:6000/chatai")
    assert proc.stdout.strip() == "postgresql://chatai:env-pw@127.0.0.1:6000/chatai"
    code = ("from core import app_config as c; print(c.SQLALCHEMY_DATABASE_URL); print(c.SECRET_KEY); "
            "print(c.LOG_FILE); print(c.UPLOAD_DIR); print(c.RELEASE); print(c.redacted_url(c.DATABASE_URL))")
    out = subprocess.run([str(PYTHON), "-c", code], cwd=app, capture_output=True, text=True,
                         env=base_env()).stdout.splitlines()
    assert out[0] == "postgresql+psycopg://chatai:file-pw@10.0.0.5:5432/chatai"
    assert out[1] == "abc"
    assert out[2] == str(app / "var" / "app.log")
    assert out[3] == str(app / "uploads")
    assert out[4] == "v1.1.0"
    assert out[5] == "postgresql://chatai:***@10.0.0.5:5432/chatai"


def test_config_check_fails_without_database_url(tmp_path):
    app = tmp_path / "backend"
    assemble_release("v1.1.0", app)
    proc = _config_check(app)
    assert proc.returncode != 0
    assert "DATABASE_URL is not set" in proc.stderr


def test_app_files():
    reqs = (APP_SRC / "requirements.txt").read_text()
    for pkg in ("fastapi", "uvicorn", "sqlalchemy>=2", "alembic", "psycopg[binary]", "python-multipart"):
        assert pkg in reqs
    ignored = (APP_SRC / ".gitignore").read_text().split()
    assert {".env", ".env.backup", "venv/", "logs/", "uploads/", "__pycache__/"} <= set(ignored)
    example = (APP_SRC / ".env.example").read_text()
    assert "DATABASE_URL=" in example and "SECRET_KEY=" in example
    ini = (APP_SRC / "alembic.ini").read_text()
    assert "script_location = alembic" in ini and "sqlalchemy.url" not in ini


def test_release_manifest(tmp_path):
    manifest = yaml.safe_load((RELEASES_DIR / "backend.yml").read_text())
    assert manifest["app"] == "backend"
    tags = [(r["tag"], r["name"], r["alembic_head"], r["good"]) for r in manifest["releases"]]
    assert tags == [("v1.0.0", "stable", "fb3228f45466", True), ("v1.1.0", "widget_version", "a1b2c3d4e5f6", True),
                    ("v1.2.0", "bad", "a1b2c3d4e5f6", False)]
    for release in manifest["releases"]:
        tree = tmp_path / release["tag"]
        assemble_release(release["tag"], tree)
        sd = scripts(tree)
        assert sd.get_heads() == [release["alembic_head"]], release["tag"]
        rel_py = (tree / "core" / "release.py").read_text()
        assert f'RELEASE = "{release["tag"]}"' in rel_py
        text = "\n".join(p.read_text() for p in tree.rglob("*") if p.is_file())
        if release["tag"] == "v1.0.0":
            assert not re.search("widget_version", text, re.I)
            assert "VERSIONED_WIDGETS = False" in rel_py
        else:
            assert "widget_version" in (tree / "models.py").read_text()
    # overlays are minimal: every overlay file differs from the base
    for overlay in (RELEASES_DIR / "backend").iterdir():
        for path in overlay.rglob("*"):
            if path.is_file():
                base = APP_SRC / path.relative_to(overlay)
                assert not base.exists() or base.read_bytes() != path.read_bytes(), path


@pytest.mark.parametrize("tag", ["v1.0.0", "v1.1.0", "v1.2.0"])
def test_release_trees_compile(tmp_path, tag):
    tree = tmp_path / tag
    assemble_release(tag, tree)
    proc = subprocess.run([str(PYTHON), "-m", "compileall", "-q", "."], cwd=tree, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
