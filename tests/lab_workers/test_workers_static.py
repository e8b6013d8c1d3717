"""The workers app's files: npm scripts, what git must not hold, the release manifest and overlay."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import APP_SRC, MANIFEST, RELEASES_DIR, ROOT, manifest


def test_package_json_scripts():
    pkg = json.loads((APP_SRC / "package.json").read_text())
    assert pkg["name"] == "chatai-workers"
    assert pkg["scripts"]["start"] == "node scalable_bot_manager.js"
    assert "scalable_bot_manager.js" in pkg["scripts"]["clean-restart"]
    assert not pkg.get("dependencies"), "the app is dependency-free (node standard library only)"


def test_rendered_config_is_not_part_of_the_tree():
    ignored = (APP_SRC / ".gitignore").read_text().split()
    for entry in ("config/production.json", "config/production.json.backup", "state/", "node_modules/", "logs/"):
        assert entry in ignored
    example = json.loads((APP_SRC / "config" / "production.json.example").read_text())
    assert {"workers", "status_port", "host", "restart_delay_ms"} <= set(example)
    assert example["status_port"] == 3001
    tracked = subprocess.run(["git", "ls-files", "lab/app/workers", "lab/app/releases/workers"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert not [p for p in tracked if p.endswith(("production.json", "production.json.backup"))]
    assert not [p for p in tracked if "/state/" in p or "/node_modules/" in p]


def test_release_manifest():
    data = manifest()
    assert data["app"] == "workers"
    tags = [r["tag"] for r in data["releases"]]
    assert tags == ["v2.0.0", "v2.1.0"]
    stable, bad = data["releases"]
    assert stable["good"] is True and stable["name"] == "stable" and not stable.get("overlay")
    assert bad["good"] is False and bad["name"] == "bad" and bad["remove"] == []
    overlay = RELEASES_DIR / "workers" / bad["overlay"]
    assert sorted(p.name for p in overlay.iterdir()) == ["bot_worker.js", "package.json", "release.json"]
    assert json.loads((overlay / "release.json").read_text())["release"] == "v2.1.0"
    assert json.loads((APP_SRC / "release.json").read_text())["release"] == "v2.0.0"
    assert MANIFEST.read_text().startswith("app: workers\n")


def test_release_repository_builds(tmp_path):
    builder = ROOT / "lab" / "scripts" / "build_release_repo.py"
    if not builder.exists():
        pytest.skip("the release builder is not there yet")
    bare = tmp_path / "workers.git"
    out = subprocess.run([sys.executable, str(builder), "--app-dir", str(APP_SRC), "--repo", str(bare)],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert [(r["tag"], r["good"]) for r in result["releases"]] == [("v2.0.0", True), ("v2.1.0", False)]

    def git(*args):
        return subprocess.run(["git", *args], cwd=bare, capture_output=True, text=True, check=True).stdout

    for tag in ("v2.0.0", "v2.1.0"):
        files = git("ls-tree", "-r", "--name-only", tag).split()
        assert "scalable_bot_manager.js" in files and "config/production.json.example" in files
        assert "config/production.json" not in files and not [f for f in files if f.startswith("state/")]
        assert json.loads(git("show", f"{tag}:release.json"))["release"] == tag
    changed = git("diff", "--name-only", "v2.0.0", "v2.1.0").split()
    assert sorted(changed) == ["bot_worker.js", "package.json", "release.json"]
