"""Every link and path reference in the repository's Markdown resolves inside the repository: an operator
who clones it must be able to follow every one of them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "build", "dist", ".pytest_cache", "output", "artifacts"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*.md"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.startswith(".lab") for part in rel.parts[:-1]):
            continue
        found.append(path)
    return sorted(found)


def local_targets(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are examples
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor of the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_the_repository_has_markdown_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/rollback.md", "docs/orchestration.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(path):
    bad = []
    for target in local_targets(path):
        resolved = (path.parent / target).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            bad.append(f"{target} (no such file)")
    assert not bad, f"{path.relative_to(ROOT)}: {bad}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_path_reference_points_above_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{path.relative_to(ROOT)} refers to ../shared, outside the repository"
    # every relative path written in the prose (`../x/y`, ../x/y) stays inside the repository; a quoted or
    # assigned one ('../../etc/x', stable_release=../../etc) is a bad input a document shows, not a reference
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    outside = [ref for ref in re.findall(r"(?<![\w.'\"=])((?:\.\./)+[\w.\-/]+)", prose)
               if not (path.parent / ref).resolve().is_relative_to(ROOT)]
    assert not outside, f"{path.relative_to(ROOT)}: {outside} point outside the repository"
