"""roles/postgres/files/replyx_archive_wal.py, the archive_command of the postgres role, run as PostgreSQL
runs it (a shell command line, the paths shell-quoted) against temporary directories."""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from pgserver import OS_USER  # noqa: E402

SCRIPT = ROOT / "roles" / "postgres" / "files" / "replyx_archive_wal.py"
SEGMENT = "000000010000000000000003"


def archive(source: Path, dest: Path) -> subprocess.CompletedProcess:
    command = " ".join(shlex.quote(str(p)) for p in (sys.executable, SCRIPT, source, dest))
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)


@pytest.fixture(params=["plain", "with space", "it's \"quoted\" é"])
def dirs(tmp_path, request):
    pg_wal = tmp_path / request.param / "pg_wal"
    archive_dir = tmp_path / request.param / "wal archive"
    pg_wal.mkdir(parents=True)
    archive_dir.mkdir()
    source = pg_wal / SEGMENT
    source.write_bytes(os.urandom(64 * 1024) * 4)
    return source, archive_dir


def test_copies_the_segment_and_leaves_no_temporary_file(dirs):
    source, archive_dir = dirs
    run = archive(source, archive_dir / SEGMENT)
    assert run.returncode == 0, run.stderr
    assert (archive_dir / SEGMENT).read_bytes() == source.read_bytes()
    assert sorted(os.listdir(archive_dir)) == [SEGMENT]


def test_a_retry_with_identical_content_succeeds(dirs):
    source, archive_dir = dirs
    assert archive(source, archive_dir / SEGMENT).returncode == 0
    run = archive(source, archive_dir / SEGMENT)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(archive_dir)) == [SEGMENT]


def test_a_retry_after_a_crash_mid_copy_replaces_the_partial_file(dirs):
    source, archive_dir = dirs
    (archive_dir / f".{SEGMENT}.replyx-partial").write_bytes(b"half a segment")
    run = archive(source, archive_dir / SEGMENT)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(archive_dir)) == [SEGMENT]


def test_an_existing_segment_with_other_content_is_a_loud_failure(dirs):
    source, archive_dir = dirs
    (archive_dir / SEGMENT).write_bytes(b"another server's segment")
    run = archive(source, archive_dir / SEGMENT)
    assert run.returncode == 1
    assert f"{SEGMENT} already exists in {archive_dir} with different content" in run.stderr
    assert (archive_dir / SEGMENT).read_bytes() == b"another server's segment"


def test_same_size_other_content_is_a_failure_too(dirs):
    source, archive_dir = dirs
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    (archive_dir / SEGMENT).write_bytes(bytes(data))
    assert archive(source, archive_dir / SEGMENT).returncode == 1


def test_a_missing_archive_directory_fails_naming_it(dirs):
    source, archive_dir = dirs
    missing = archive_dir / "gone"
    run = archive(source, missing / SEGMENT)
    assert run.returncode == 1
    assert f"the archive directory {missing} does not exist" in run.stderr


def test_an_unwritable_archive_directory_fails_and_leaves_nothing():
    """As the server's OS user (root would write anyway): the archive directory is read-only."""
    root = Path(tempfile.mkdtemp(prefix="replyx-archive-ro "))
    try:
        source, archive_dir = root / SEGMENT, root / "read-only é"
        source.write_bytes(b"x" * 4096)
        archive_dir.mkdir()
        prefix, python = [], sys.executable
        if os.geteuid() == 0:
            pw = pwd.getpwnam(OS_USER)
            for path in (root, source, archive_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            prefix, python = ["runuser", "-u", OS_USER, "--"], "/usr/bin/python3"  # the venv may be closed to it
        archive_dir.chmod(0o500)
        command = " ".join(shlex.quote(str(p)) for p in (python, SCRIPT, source, archive_dir / SEGMENT))
        run = subprocess.run([*prefix, "/bin/sh", "-c", command], capture_output=True, text=True, check=False)
        assert run.returncode == 1
        assert "Permission denied" in run.stderr and f"failed to archive {source}" in run.stderr
        assert os.listdir(archive_dir) == []
    finally:
        (root / "read-only é").chmod(0o700)
        shutil.rmtree(root)


def test_wrong_arguments_print_the_usage():
    run = subprocess.run([sys.executable, str(SCRIPT), "only-one"], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "usage:" in run.stderr


def test_check_mode_says_whether_the_directory_is_writable(dirs):
    _source, archive_dir = dirs
    ok = subprocess.run([sys.executable, str(SCRIPT), "--check", str(archive_dir)], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0 and "is writable" in ok.stdout and os.listdir(archive_dir) == []
    missing = subprocess.run([sys.executable, str(SCRIPT), "--check", str(archive_dir / "gone")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "cannot archive into" in missing.stderr and "does not exist" in missing.stderr
