"""The second layout's inventory alone (no lab): the default lab's variables do not move it, its own do."""
from __future__ import annotations

import subprocess

from tests import labutil
from tests.layout2.conftest import LAYOUT

SHOW = "msg={{ lab_root }}|{{ postgres_port }}|{{ backend_port }}|{{ workers_status_port }}|{{ postgres_database }}"


def _resolved(**env) -> set[str]:
    proc = subprocess.run([str(labutil.VENV_BIN / "ansible"), "-i", LAYOUT.inventory, "all", "-m",
                           "ansible.builtin.debug", "-a", SHOW], cwd=labutil.ROOT, capture_output=True, text=True,
                          env=labutil.env(drop=LAYOUT.env_vars, **env), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split("msg:", 1)[1].strip() for line in proc.stdout.splitlines() if "msg:" in line}


def test_the_default_lab_variables_do_not_apply():
    lab_env = {"REPLYX_LAB_ROOT": "/tmp/not-layout2", "REPLYX_PG_PORT": 55999, "REPLYX_BACKEND_PORT": 8999,
               "REPLYX_WORKERS_PORT": 3999}
    assert _resolved(**lab_env) == {f"{labutil.ROOT}/.lab-layout2/replyx lab \u00fc'2|55472|8470|3471|replyx_prod"}
    moved = _resolved(REPLYX_LAYOUT2_ROOT="/tmp/l2 moved", REPLYX_LAYOUT2_PG_PORT=55473,
                      REPLYX_LAYOUT2_BACKEND_PORT=8471, REPLYX_LAYOUT2_WORKERS_PORT=3472)
    assert moved == {"/tmp/l2 moved|55473|8471|3472|replyx_prod"}
