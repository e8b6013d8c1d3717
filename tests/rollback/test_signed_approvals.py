"""Signed approvals end to end (issue 11): an inventory that refuses typed approvals, and a rollback a signature
over its plan's digest approves.

The lab inventory allows typed approvals; a second inventory source (host variables of `postgres`, where
controller-side settings are read) makes it production-like: rollback_allow_unsigned_approvals false, an
allowed_signers file with keys ssh-keygen makes here, and the signers' roles. The decisions themselves are
table-driven unit tests (collection tests/unit/plugins/module_utils/test_signatures.py)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import labutil
from tests.rollback.conftest import LOCK_FILE, backups, deploy, lab_state, reports, rollback

pytestmark = pytest.mark.lab

DIGEST_LINE = re.compile(r"Plan digest: ([0-9a-f]{64})")


def _flat(proc) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture
def signers(tmp_path) -> dict:
    """Keys of the CTO (executive) and of a developer; the production-like inventory source naming them."""
    d = tmp_path / "signers"
    d.mkdir()
    lines = []
    keys = {}
    for name in ("cto", "dev"):
        key = d / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
        keys[name] = key
        lines.append(f'{name}@replyx namespaces="replyx-rollback" ' + " ".join(key.with_suffix(".pub").read_text().split()[:2]))
    allowed = d / "allowed_signers"
    allowed.write_text("\n".join(lines) + "\n")
    inventory = d / "production-like.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"postgres": {
        "rollback_allow_unsigned_approvals": False,
        "rollback_allowed_signers": str(allowed),
        "rollback_signer_roles": {"cto@replyx": "executive", "dev@replyx": "developer"},
    }}}}))
    return {"keys": keys, "inventory": ["-i", "inventories/lab", "-i", str(inventory)], "dir": d}


def _sign(signers: dict, who: str, digest: str) -> Path:
    """What an approver runs: replyx-rollback approve (ssh-keygen -Y sign -n replyx-rollback)."""
    out = signers["dir"] / f"{who}-{digest[:12]}.sig"
    proc = subprocess.run([str(labutil.VENV_BIN / "replyx-rollback"), "approve", "--digest", digest, "--key",
                           str(signers["keys"][who]), "-o", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _unchanged(before, backups_before, artifacts: Path) -> None:
    assert lab_state() == before
    assert backups() == backups_before
    assert not LOCK_FILE.exists()
    assert list(artifacts.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["-e", "level=critical", "-e", "approvals=ceo:executive:INC-1"],
     "unsigned approvals (-e approvals=... or approved_by) are not accepted in this inventory"),
    (["-e", "level=critical", "-e", "approvals=ceo:executive:INC-1", "--check"],
     "rollback_allow_unsigned_approvals is not true"),
    (["-e", "level=critical"], "Give them signed: each approver runs replyx-rollback approve --digest"),
    (["-e", "level=critical", "-e", "approvals=ceo:executive:INC-1", "-e", "rollback_allow_unsigned_approvals=true"],
     "rollback_allow_unsigned_approvals given as extra vars; who may approve is inventory data"),
])
def test_a_production_like_inventory_refuses_typed_approvals_before_anything_changes(baseline, artifacts, signers,
                                                                                      args, message):
    before, backups_before = lab_state(), backups()
    proc = rollback(*signers["inventory"], *args, artifacts=artifacts)
    assert proc.returncode != 0
    assert message in _flat(proc), _flat(proc)[-3000:]
    if "approvals=" in " ".join(args) and "extra vars" not in message:
        assert "replyx-rollback approve --digest <plan digest> --key <ssh key>" in _flat(proc)
    _unchanged(before, backups_before, artifacts)


def test_a_signed_approval_lets_the_critical_level_run(baseline, artifacts, signers, tmp_path):
    """The 3 a.m. flow: the plan in check mode prints its digest, the CTO signs it, the run takes the signature.
    A developer's signature, or the CTO's over another plan, is refused before the lock."""
    deploy("bad")
    shown_dir = tmp_path / "check"
    shown_dir.mkdir()
    shown = rollback(*signers["inventory"], "-e", "level=critical", "--check", artifacts=shown_dir)
    assert shown.returncode == 0, shown.stdout[-4000:]
    digest = DIGEST_LINE.search(shown.stdout).group(1)

    before, backups_before = lab_state(), backups()
    other = "0" * 64
    for who, sign_over, message in (("dev", digest, "level critical needs approval by a executive"),
                                    ("cto", other, "does not sign this plan: it is not a good signature over digest "
                                                   + digest)):
        refused = rollback(*signers["inventory"], "-e", "level=critical", "-e",
                           f"approval_signatures={_sign(signers, who, sign_over)}", artifacts=artifacts)
        assert refused.returncode != 0 and message in _flat(refused), _flat(refused)[-3000:]
        _unchanged(before, backups_before, artifacts)

    signature = _sign(signers, "cto", digest)
    run = rollback(*signers["inventory"], "-e", "level=critical", "-e", f"approval_signatures={signature}",
                   "-e", "ticket=INC-11", artifacts=artifacts)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # the same plan as the one signed: the run's digest is the check mode's
    assert DIGEST_LINE.search(run.stdout).group(1) == digest
    assert "EXECUTING" in run.stdout
    assert lab_state()["backend"] == "v1.1.0"
    report = reports(artifacts)[-1].read_text()
    assert f"Plan digest: `{digest}`" in report
    assert re.search(r"- cto@replyx \(executive\), ticket INC-11, signed the plan digest with key SHA256:\S+", report), report
