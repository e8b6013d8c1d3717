"""AWX/Controller objects as code: consistent with the playbooks and the level policy."""
from __future__ import annotations

import subprocess

import yaml

from tests import labutil

AWX = labutil.ROOT / "awx"
POLICY = yaml.safe_load((labutil.ROOT / "roles" / "rollback_policy" / "vars" / "levels.yml").read_text())


def _controller():
    return yaml.safe_load((AWX / "controller.yml").read_text())


def test_every_job_template_runs_an_existing_playbook():
    for jt in _controller()["replyx_awx_job_templates"]:
        assert (labutil.ROOT / jt["playbook"]).is_file(), jt["playbook"]


def test_rollback_survey_offers_exactly_the_policy_choices():
    rollback = next(j for j in _controller()["replyx_awx_job_templates"] if j["playbook"] == "playbooks/rollback.yml")
    survey = {q["variable"]: q for q in rollback["survey"]}
    assert survey["level"]["choices"] == list(POLICY["rollback_policy_levels"]) + ["auto"]
    assert survey["component"]["choices"] == list(POLICY["rollback_policy_components"])
    # named migration targets are application data: the inventory's rollback_named_targets
    inventory = yaml.safe_load((labutil.ROOT / "inventories" / "production" / "group_vars" / "all" / "main.yml").read_text())
    assert survey["target"]["choices"] == list(inventory["rollback_named_targets"])


def test_workflows_need_two_approval_nodes_before_the_data_changing_step():
    c = _controller()
    names = {j["name"] for j in c["replyx_awx_job_templates"]}
    for wf in c["replyx_awx_workflows"]:
        nodes = {n["identifier"]: n for n in wf["nodes"]}
        for n in wf["nodes"]:
            assert "job_template" in n or "approval" in n
            assert n.get("job_template", next(iter(names))) in names
            for nxt in n.get("success", []):
                assert nxt in nodes
        approvals = [n for n in wf["nodes"] if "approval" in n]
        assert len(approvals) == 2


def test_configure_playbook_and_execution_environment_are_valid():
    proc = subprocess.run([str(labutil.VENV_BIN / "ansible-playbook"), "--syntax-check", "awx/configure.yml",
                           "-e", "@awx/controller.yml"], cwd=labutil.ROOT, env=labutil.env(), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ee = yaml.safe_load((AWX / "execution-environment.yml").read_text())
    assert ee["version"] == 3 and "psycopg[binary]>=3.1" in ee["dependencies"]["python"]
