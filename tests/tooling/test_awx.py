"""AWX/Controller objects as code: consistent with the playbooks and the level policy."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests import labutil

AWX = labutil.ROOT / "awx"
POLICY = yaml.safe_load((labutil.ROOT / "roles" / "rollback_policy" / "vars" / "levels.yml").read_text())


class _Loader(yaml.SafeLoader):
    """YAML as Ansible reads awx/controller.yml: !unsafe marks text Ansible must not template."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _controller():
    return yaml.load((AWX / "controller.yml").read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)


def test_every_job_template_runs_an_existing_playbook():
    for jt in _controller()["replyx_awx_job_templates"]:
        assert (labutil.ROOT / jt["playbook"]).is_file(), jt["playbook"]


def test_rollback_survey_offers_exactly_the_policy_choices():
    c = _controller()
    rollback = next(j for j in c["replyx_awx_job_templates"] if j["playbook"] == "playbooks/awx_rollback.yml")
    workflow = next(w for w in c["replyx_awx_workflows"] if w["name"] == "ReplyX - rollback (approved)")
    assert workflow["survey"] == rollback["survey"]  # the workflow's survey is the one its operators fill in
    survey = {q["variable"]: q for q in rollback["survey"]}
    assert survey["level"]["choices"] == list(POLICY["rollback_policy_levels"]) + ["auto"]
    assert survey["component"]["choices"] == list(POLICY["rollback_policy_components"])
    # named migration targets are application data: the inventory's rollback_named_targets
    inventory = yaml.safe_load((labutil.ROOT / "inventories" / "production" / "group_vars" / "all" / "main.yml").read_text())
    assert survey["target"]["choices"] == list(inventory["rollback_named_targets"])


def test_restore_survey_offers_exactly_the_restore_methods():
    from ansible_collections.replyx.rollback.plugins.module_utils._policy import RESTORE_METHODS  # noqa: PLC0415

    c = _controller()
    restore = next(j for j in c["replyx_awx_job_templates"] if j["playbook"] == "playbooks/awx_restore.yml")
    workflow = next(w for w in c["replyx_awx_workflows"] if w["name"] == "ReplyX - restore (approved)")
    assert workflow["survey"] == restore["survey"]
    method = {q["variable"]: q for q in restore["survey"]}["restore_method"]
    assert method["choices"] == list(RESTORE_METHODS) and method["default"] == "auto" and not method["required"]


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
    # ansible-builder names it after the container runtime it finds: Containerfile when podman is installed
    found = [p for p in (context / "Containerfile", context / "Dockerfile") if p.is_file()]
    assert len(found) == 1, sorted(p.name for p in context.iterdir())
    containerfile = found[0].read_text()
    assert "ansible-galaxy collection install --offline -p /usr/share/ansible/collections /tmp/replyx-collection/" \
        in containerfile
    assert yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"][0]["version"]


class _Controller:
    """A stand-in of the controller's API endpoints playbooks/awx_approvals.yml reads: the nodes of a
    workflow job and each workflow approval (who approved, the node's name)."""

    def __init__(self, approvals):
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/api/v2/workflow_jobs/42/workflow_nodes/"):
                    body = {"count": len(approvals) + 2, "results": [
                        {"id": 1, "summary_fields": {"job": {"id": 501, "type": "job", "status": "successful"}}},
                        *({"id": 10 + i, "summary_fields": {"job": {"id": 900 + i, "type": "workflow_approval",
                                                                    "status": a[2]}}} for i, a in enumerate(approvals)),
                        {"id": 2, "summary_fields": {}}]}
                elif self.path.startswith("/api/v2/workflow_approvals/9"):
                    name, user, status = approvals[int(self.path.rstrip("/").rsplit("/", 1)[1]) - 900]
                    body = {"id": 900, "name": name, "status": status,
                            "summary_fields": {"approved_or_denied_by": {"id": 7, "username": user}}}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _approvals_play(controller, *extra, playbook="awx_approvals.yml", check=False, inventory=(), **env):
    args = [a for kv in extra for a in ("-e", kv)] + (["--check"] if check else [])
    return labutil.playbook(playbook, *inventory, *args, CONTROLLER_HOST=controller.url, CONTROLLER_OAUTH_TOKEN="tok-123",
                            **env)


def test_approvals_are_read_back_from_the_controller():
    controller = _Controller([("Team lead approves the rollback [team_lead]", "alice", "successful"),
                              ("Second approver (data can be lost) [executive]", "bob", "successful")])
    try:
        proc = _approvals_play(controller, "awx_job_id=43", "awx_workflow_job_id=42", "ticket=INC-9")
    finally:
        controller.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Approvals from the controller (workflow job 42): alice:team_lead:INC-9,bob:executive:INC-9" in proc.stdout
    assert all(auth == "Bearer tok-123" for _, auth in controller.requests) and len(controller.requests) == 3
    assert "tok-123" not in proc.stdout + proc.stderr


def test_the_same_person_approving_twice_is_refused():
    controller = _Controller([("First approver of the restore [executive]", "alice", "successful"),
                              ("Second approver of the restore [team_lead]", "alice", "successful")])
    try:
        proc = _approvals_play(controller, "awx_job_id=43", "awx_workflow_job_id=42")
    finally:
        controller.close()
    assert proc.returncode != 0
    assert "The same person approved more than once (alice, alice)" in proc.stdout


def test_approvals_as_extra_vars_are_refused_under_awx():
    controller = _Controller([])
    try:
        proc = _approvals_play(controller, "awx_job_id=43", "awx_workflow_job_id=42", "approvals=me:executive:X")
    finally:
        controller.close()
    assert proc.returncode != 0 and "remove the extra var 'approvals'" in proc.stdout
    assert controller.requests == []  # refused before asking the controller


@pytest.mark.lab
def test_the_rollback_under_awx_checks_the_approvals_read_back(lab, tmp_path):
    """playbooks/awx_rollback.yml: the critical level needs an executive; the controller says who approved."""
    controller = _Controller([("Team lead approves the rollback [team_lead]", "alice", "successful"),
                              ("Second approver (data can be lost) [executive]", "bob", "successful")])
    try:
        ok = _approvals_play(controller, "awx_job_id=43", "awx_workflow_job_id=42", "level=critical", "ticket=INC-9",
                             check=True, playbook="awx_rollback.yml", REPLYX_ARTIFACTS_DIR=tmp_path)
    finally:
        controller.close()
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "CHECK MODE: nothing will change" in ok.stdout
    assert "alice:team_lead:INC-9,bob:executive:INC-9" in ok.stdout
    # executing (approvals are checked only when the plan executes): refused before any change, by whom
    lead_only = _Controller([("Team lead approves the rollback [team_lead]", "alice", "successful"),
                             ("Second approver (data can be lost) [executive]", "bob", "failed")])
    try:
        refused = _approvals_play(lead_only, "awx_job_id=43", "awx_workflow_job_id=42", "level=critical",
                                  "ticket=INC-9", playbook="awx_rollback.yml", REPLYX_ARTIFACTS_DIR=tmp_path)
    finally:
        lead_only.close()
    assert refused.returncode != 0
    assert "needs approval by a executive" in refused.stdout and "Recorded approvals: alice." in refused.stdout


@pytest.mark.lab
def test_under_awx_the_approval_nodes_count_where_typed_approvals_are_refused(lab, tmp_path):
    """A production-like inventory (typed approvals refused): the approvals read back from the workflow's nodes are
    the controller's records, not typed, so the plan takes them; the same names typed are refused; and
    awx_approvals_users given as an extra var (to pass typed approvals off as the controller's) is refused."""
    prodlike = tmp_path / "production-like.yml"
    prodlike.write_text(yaml.safe_dump({"all": {"hosts": {"postgres": {"rollback_allow_unsigned_approvals": False}}}}))
    inventory = ("-i", "inventories/lab", "-i", str(prodlike))
    controller = _Controller([("Team lead approves the rollback [team_lead]", "alice", "successful"),
                              ("Second approver (data can be lost) [executive]", "bob", "successful")])
    try:
        ok = _approvals_play(controller, "awx_job_id=43", "awx_workflow_job_id=42", "level=critical", "ticket=INC-9",
                             check=True, playbook="awx_rollback.yml", REPLYX_ARTIFACTS_DIR=tmp_path, inventory=inventory)
    finally:
        controller.close()
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "CHECK MODE: nothing will change" in ok.stdout and "Plan digest: " in ok.stdout
    typed = labutil.playbook("rollback.yml", *inventory, "-e", "level=critical", "-e", "approvals=alice:executive:INC-9",
                             "--check", REPLYX_ARTIFACTS_DIR=tmp_path)
    assert typed.returncode != 0 and "unsigned approvals (-e approvals=... or approved_by) are not accepted" in typed.stdout
    forged = labutil.playbook("rollback.yml", *inventory, "-e", "level=critical", "-e", "approvals=alice:executive:INC-9",
                              "-e", '{"awx_approvals_users": ["alice"]}', "--check", REPLYX_ARTIFACTS_DIR=tmp_path)
    assert forged.returncode != 0
    assert "awx_approvals_users, approvals given as extra vars" in " ".join(forged.stdout.split()), forged.stdout[-3000:]
    # outside AWX (no awx_job_id) with a workflow id: the read-back runs, but typed approvals do not ride on it
    controller = _Controller([("Team lead approves the rollback [team_lead]", "alice", "successful")])
    try:
        riding = _approvals_play(controller, "awx_workflow_job_id=42", "level=critical", "approvals=me:executive:X",
                                 check=True, playbook="awx_rollback.yml", REPLYX_ARTIFACTS_DIR=tmp_path,
                                 inventory=inventory)
    finally:
        controller.close()
    assert riding.returncode != 0 and "approvals given as extra vars" in riding.stdout, riding.stdout[-3000:]


def test_approval_nodes_name_a_policy_role_and_data_changing_steps_have_failure_paths():
    roles = set(POLICY["rollback_policy_role_rank"])
    c = _controller()
    reads = {j["name"] for j in c["replyx_awx_job_templates"] if j.get("reads_approvals")}
    assert reads == {"ReplyX - rollback", "ReplyX - restore", "ReplyX - pitr"}
    for j in c["replyx_awx_job_templates"]:
        assert j["playbook"].startswith("playbooks/awx_") == (j["name"] in reads), j["name"]
    for wf in c["replyx_awx_workflows"]:
        nodes = {n["identifier"]: n for n in wf["nodes"]}
        for n in wf["nodes"]:
            if "approval" in n:
                role = n["approval"]["name"].rsplit("[", 1)[-1].rstrip("]")
                assert role in roles, n["approval"]["name"]
            if n.get("job_template") in reads:
                assert n.get("failure") and all(f in nodes for f in n["failure"]), n["identifier"]
        assert wf["survey"] and all(q["variable"] for q in wf["survey"])
    names = {t["name"] for t in c["replyx_awx_notification_templates"]}
    for kind in ("error", "success", "approvals"):
        assert set(c["replyx_awx_workflow_notifications"][kind]) <= names
    webhook = c["replyx_awx_credential_types"][0]
    assert webhook["inputs"]["fields"][0]["secret"] is True
    assert webhook["injectors"]["extra_vars"] == {"rollback_webhook_url": "{{ webhook_url }}"}
    assert "replyx-webhook" in c["replyx_awx_credentials"]


def test_configure_uses_only_options_the_awx_modules_have():
    """Every argument awx/configure.yml gives an awx.awx module is one of that module's options (ansible-doc),
    with the suboptions of approval_node, and a notification type among its choices."""
    tasks = yaml.safe_load((AWX / "configure.yml").read_text())[0]["tasks"]
    used = {}
    for task in tasks:
        module = next(k for k in task if k.startswith("awx.awx."))
        used.setdefault(module, set()).update(task[module])
    proc = subprocess.run([str(labutil.VENV_BIN / "ansible-doc"), "-j", *sorted(used)], cwd=labutil.ROOT,
                          env=labutil.env(), capture_output=True, text=True, check=True)
    docs = json.loads(proc.stdout)
    assert set(docs) == set(used)
    for module, args in used.items():
        options = docs[module]["doc"]["options"]
        assert args <= set(options), (module, args - set(options))
    node = docs["awx.awx.workflow_job_template_node"]["doc"]["options"]["approval_node"]["suboptions"]
    for wf in _controller()["replyx_awx_workflows"]:
        for n in wf["nodes"]:
            assert set(n.get("approval", {})) <= set(node)
    choices = docs["awx.awx.notification_template"]["doc"]["options"]["notification_type"]["choices"]
    assert {t["notification_type"] for t in _controller()["replyx_awx_notification_templates"]} <= set(choices)
    kinds = docs["awx.awx.credential_type"]["doc"]["options"]["kind"]["choices"]
    assert {t["kind"] for t in _controller()["replyx_awx_credential_types"]} <= set(kinds)
