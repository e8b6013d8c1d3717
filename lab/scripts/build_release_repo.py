#!/usr/bin/env python3
"""Build (or bring up to date) a bare git repository of tagged releases for a lab application.

Each release in ``lab/app/releases/<app>.yml`` is the base tree ``lab/app/<app>`` plus the files
of its overlay directory, minus its ``remove`` paths. Releases are committed in manifest order and
tagged, so the repository looks like a real product's history: ``git log --oneline`` shows them and
``git checkout <tag>`` gives the release's exact tree.

Idempotent: the commit for a release is made from a fixed author/date, so the same sources give
the same commit ids; when the bare repository already holds those tags at those commits nothing is
written. Prints one JSON line: {"changed": bool, "releases": [{tag, commit, ...}]}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import yaml

FIXED_ENV = {
    "GIT_AUTHOR_NAME": "ReplyX release bot",
    "GIT_AUTHOR_EMAIL": "releases@replyx.invalid",
    "GIT_COMMITTER_NAME": "ReplyX release bot",
    "GIT_COMMITTER_EMAIL": "releases@replyx.invalid",
}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", ".env", "venv", "logs",
                                 "uploads", "state")


def git(args, cwd, env=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {}))).stdout.strip()


def load_manifest(app_dir: Path, app: str) -> list[dict]:
    manifest = app_dir.parent / "releases" / f"{app}.yml"
    data = yaml.safe_load(manifest.read_text())
    releases = data.get("releases") or []
    if not releases:
        raise SystemExit(f"no releases in {manifest}")
    return releases


def assemble(app_dir: Path, release: dict, dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(app_dir, dest, dirs_exist_ok=True, ignore=IGNORED)
    overlay = release.get("overlay")
    if overlay:
        shutil.copytree(app_dir.parent / "releases" / app_dir.name / overlay, dest, dirs_exist_ok=True,
                        ignore=IGNORED)
    for rel in release.get("remove") or []:
        target = dest / rel
        if not target.exists():
            raise SystemExit(f"release {release['tag']}: remove path {rel} does not exist")
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def build(app_dir: Path, bare: Path) -> dict:
    releases = load_manifest(app_dir, app_dir.name)
    work = Path(tempfile.mkdtemp(prefix=f"replyx-{app_dir.name}-build-"))
    try:
        git(["init", "-q", "-b", "main"], work)
        built = []
        for index, release in enumerate(releases):
            assemble(app_dir, release, work)
            # Hash every file again: an overlay file copied with its timestamp over a base file of the
            # same size can look unchanged to git's stat cache (same size, mtime and inode).
            git(["read-tree", "--empty"], work)
            git(["add", "-A"], work)
            # A fixed date per release keeps the commit ids stable across builds of the same sources.
            date = f"2025-09-{index + 1:02d}T12:00:00+00:00"
            message = f"Release {release['tag']} ({release.get('name', '')}): {release.get('description', '')}".strip()
            git(["commit", "-q", "--allow-empty", "-m", message], work,
                env=dict(FIXED_ENV, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date))
            git(["tag", "-f", release["tag"]], work)
            built.append({"tag": release["tag"], "name": release.get("name"), "good": bool(release.get("good", True)),
                          "alembic_head": release.get("alembic_head"), "commit": git(["rev-parse", "HEAD"], work)})
        current = {}
        if (bare / "HEAD").exists():
            for line in git(["show-ref", "--tags"], bare).splitlines() if _has_tags(bare) else []:
                sha, ref = line.split()
                current[ref.rsplit("/", 1)[-1]] = sha
        wanted = {r["tag"]: r["commit"] for r in built}
        changed = current != wanted
        if changed:
            if not (bare / "HEAD").exists():
                bare.parent.mkdir(parents=True, exist_ok=True)
                git(["init", "-q", "--bare", "-b", "main", str(bare)], work)
            git(["push", "-q", "--force", str(bare), "main", "--tags", "--force"], work)
            for stale in set(current) - set(wanted):
                git(["tag", "-d", stale], bare)
        return {"changed": changed, "repo": str(bare), "releases": built}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _has_tags(bare: Path) -> bool:
    return subprocess.run(["git", "show-ref", "--tags", "-q"], cwd=bare).returncode == 0


def _repo_path(value: str) -> Path:
    """A path, or a file:// URL (percent-encoded: inventories use them for roots with spaces or quotes)."""
    if value.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(value).path))
    return Path(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", required=True, type=Path, help="lab/app/<app> (the base tree)")
    parser.add_argument("--repo", required=True, type=_repo_path,
                        help="bare repository to create or update (a path or a file:// URL)")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.app_dir.resolve(), args.repo)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
