"""AWX/Controller objects as code: consistent with the playbooks and the level policy."""
from __future__ import annotations

import json
import subprocess

import pytest
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


def _bundled_version(collection: str) -> str:
    """The version of a collection in the ansible package of the venv the tests run with."""
    namespace, name = collection.split(".")
    site = next(labutil.ROOT.joinpath(".venv").resolve().glob("lib/python*/site-packages"))
    return json.loads((site / "ansible_collections" / namespace / name / "MANIFEST.json").read_text())[
        "collection_info"]["version"]


def test_execution_environment_pins_what_the_roles_use_and_installs_the_built_collection():
    ee = yaml.safe_load((AWX / "execution-environment.yml").read_text())
    collections = {c["name"]: c.get("version") for c in ee["dependencies"]["galaxy"]["collections"]}
    # the collections the roles use, at the versions tested; nothing unused (ansible.posix was)
    assert collections == {c: _bundled_version(c) for c in ("community.postgresql", "community.general")}
    # EL9 (the awx-ee base) names the client package postgresql, Debian postgresql-client
    assert "postgresql [platform:rpm]" in ee["dependencies"]["system"]
    assert "postgresql-client [platform:dpkg]" in ee["dependencies"]["system"]
    # the built tarball, not the source tree
    assert [f["src"] for f in ee["additional_build_files"]] == ["../build/replyx-rollback-*.tar.gz"]


def test_ansible_builder_creates_the_build_context(tmp_path):
    builder = labutil.VENV_BIN / "ansible-builder"
    if not builder.exists():
        pytest.skip("ansible-builder is not in .venv yet: make venv (it is in the test extra)")
    build = tmp_path / "build"
    subprocess.run([str(labutil.VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(build),
                    "collection/ansible_collections/replyx/rollback"], cwd=labutil.ROOT, env=labutil.env(), check=True,
                   capture_output=True)
    ee_dir = tmp_path / "awx"
    ee_dir.mkdir()
    (ee_dir / "execution-environment.yml").write_text((AWX / "execution-environment.yml").read_text())
    proc = subprocess.run([str(builder), "create", "-f", str(ee_dir / "execution-environment.yml"), "-c",
                           str(tmp_path / "context")], cwd=tmp_path, env=labutil.env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "Complete!" in proc.stdout, proc.stdout + proc.stderr
    context = tmp_path / "context"
    tarballs = list((context / "_build" / "replyx-collection").glob("replyx-rollback-*.tar.gz"))
    assert len(tarballs) == 1
    containerfile = (context / "Dockerfile").read_text()
    assert "ansible-galaxy collection install --offline -p /usr/share/ansible/collections /tmp/replyx-collection/" \
        in containerfile
    assert yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"][0]["version"]
