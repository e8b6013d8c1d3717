"""The README's commands work as printed: the shell blocks it marks `<!-- readme-test: safe -->` run, in
order, in one shell started from the repository's root with nothing of the project on PATH, against the
running lab; they succeed and change nothing."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests import labutil

pytestmark = pytest.mark.lab

MARK = "<!-- readme-test: safe -->"
LAB_LOCATION = ("REPLYX_LAB_ROOT", "REPLYX_PG_PORT", "REPLYX_BACKEND_PORT", "REPLYX_WORKERS_PORT")
BLOCK = re.compile(re.escape(MARK) + r"\s*```(?:bash|sh)\n(.*?)```", re.S)


def safe_blocks() -> list[str]:
    return BLOCK.findall((labutil.ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_marks_the_activation_and_a_look_first_block():
    blocks = safe_blocks()
    assert len(blocks) >= 2
    assert blocks[0].lstrip().startswith(". .venv/bin/activate")
    assert any("--check" in b for b in blocks)


def _clean_env(artifacts) -> dict:
    # Nothing of the project's environment, except where the lab under test lives (REPLYX_LAB_ROOT, ports).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "REPLYX_", "VIRTUAL_ENV", "PYTEST", "PM2_")) or k in LAB_LOCATION}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["REPLYX_ARTIFACTS_DIR"] = str(artifacts)  # the test's own artifacts; the README's default is artifacts/
    return env


def test_the_safe_blocks_run_as_printed_and_change_nothing(lab, tmp_path):
    script = "set -euo pipefail\n" + "\n".join(safe_blocks())
    head = labutil.psql("select version_num from alembic_version")
    before = labutil.release_history("backend")
    proc = subprocess.run(["bash", "-c", script], cwd=labutil.ROOT, env=_clean_env(tmp_path), capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "command not found" not in out
    assert "postgres : up on " in proc.stdout
    assert "CHECK MODE: nothing will change" in proc.stdout and "Steps:" in proc.stdout
    assert "HEALTHY - snapshot " in proc.stdout
    assert labutil.psql("select version_num from alembic_version") == head
    assert labutil.release_history("backend") == before
    for secret in labutil.SECRETS:
        assert secret not in out
