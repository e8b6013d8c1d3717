"""The rollback reads as a runbook: from playbooks/rollback.yml (and the playbooks built on it) no chain of
task-file includes is deeper than 3. Computed statically from the YAML: include_role/import_role and
include_tasks/import_tasks each add a level; a templated target counts as every task file
it could name (the template part as a wildcard)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MAX_DEPTH = 3
ROLE_INCLUDES = {"include_role", "import_role"}
TASK_INCLUDES = {"include_tasks", "import_tasks"}
TEMPLATED = re.compile(r"{{.*?}}")


def _module(task: dict) -> tuple[str, object] | None:
    for key, value in task.items():
        short = key.rsplit(".", 1)[-1]
        if key.startswith(("ansible.builtin.", "ansible.legacy.")) or "." not in key:
            if short in ROLE_INCLUDES | TASK_INCLUDES:
                return short, value
    return None


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _role_files(name: str, tasks_from: str) -> list[Path]:
    tasks_dir = ROOT / "roles" / name / "tasks"
    if TEMPLATED.search(tasks_from):  # every file the template could name: "component_{{ x }}" -> component_*
        return sorted(tasks_dir.glob(TEMPLATED.sub("*", tasks_from).removesuffix(".yml") + ".yml"))
    path = tasks_dir / (tasks_from if tasks_from.endswith((".yml", ".yaml")) else tasks_from + ".yml")
    return [path]


def _targets(task: dict, here: Path) -> list[Path]:
    found = _module(task)
    if not found:
        return []
    kind, value = found
    if kind in ROLE_INCLUDES:
        return _role_files(value["name"], str(value.get("tasks_from", "main")))
    target = value if isinstance(value, str) else (value.get("file") or value.get("_raw_params"))
    if TEMPLATED.search(target):
        return sorted(here.parent.glob(TEMPLATED.sub("*", target)))
    return [here.parent / target]


def _tasks(items) -> list[dict]:
    out = []
    for task in items or []:
        if not isinstance(task, dict):
            continue
        if "block" in task:
            for key in ("block", "rescue", "always"):
                out.extend(_tasks(task.get(key)))
        else:
            out.append(task)
    return out


def deepest(tasks: list[dict], here: Path, chain: tuple[str, ...]) -> tuple[str, ...]:
    best = chain
    for task in _tasks(tasks):
        for target in _targets(task, here):
            assert target.exists(), f"{_rel(here)} includes {_rel(target)}, which does not exist"
            name = _rel(target)
            if name in chain:
                continue  # a loop is not deeper
            sub = deepest(yaml.safe_load(target.read_text()) or [], target, chain + (name,))
            if len(sub) > len(best):
                best = sub
    return best


def playbook_chain(path: Path) -> tuple[str, ...]:
    best: tuple[str, ...] = ()
    for play in yaml.safe_load(path.read_text()) or []:
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            inner = ROOT / "playbooks" / (play.get("import_playbook") or play["ansible.builtin.import_playbook"])
            sub = playbook_chain(inner)
        else:
            tasks = [t for key in ("pre_tasks", "tasks", "post_tasks") for t in play.get(key) or []]
            tasks += [{"include_role": {"name": r if isinstance(r, str) else r["role"]}} for r in play.get("roles") or []]
            sub = deepest(tasks, path, ())
        if len(sub) > len(best):
            best = sub
    return best


@pytest.mark.parametrize("playbook", ["rollback.yml", "pitr.yml", "restore.yml"])
def test_include_depth_is_at_most_three(playbook):
    chain = playbook_chain(ROOT / "playbooks" / playbook)
    assert 2 <= len(chain) <= MAX_DEPTH, f"{playbook}: " + " -> ".join(chain)


def test_the_depth_counter_sees_a_fourth_level(tmp_path):
    # the counter itself: a chain of four task files is reported as four levels
    for i in range(4):
        nxt = [{"name": "next", "ansible.builtin.include_tasks": f"f{i + 1}.yml"}] if i < 3 else [{"name": "x", "debug": {}}]
        (tmp_path / f"f{i}.yml").write_text(yaml.safe_dump(nxt))
    (tmp_path / "f4.yml").write_text("[]")
    chain = deepest([{"ansible.builtin.include_tasks": "f0.yml"}], tmp_path / "play.yml", ())
    assert len(chain) == 4
