# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import (
    SCHEME_FILES, checksum_path, files_digest, hash_file, hash_files, load_manifest, manifest_path_for, sha256_path,
    size_path, verify_manifest, write_manifest)


def _backup(tmp_path, content=b"PGDMP backup bytes"):
    path = tmp_path / "chatai-20260101T000000Z.dump"
    path.write_bytes(content)
    manifest = dict(name=path.name, path=str(path), kind="logical", format="custom",
                    sha256=hashlib.sha256(content).hexdigest(), database="chatai")
    mpath = write_manifest(str(path), manifest)
    return path, mpath


def test_sha256_of_file_is_plain_sha256(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert sha256_path(str(f)) == hashlib.sha256(b"abc").hexdigest()


def test_sha256_of_directory_is_defined_by_sorted_relpaths_sizes_and_contents(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "b.dat").write_bytes(b"BB")
    (d / "sub" / "a.dat").write_bytes(b"A")
    expected = hashlib.sha256()
    for rel, data in (("b.dat", b"BB"), ("sub/a.dat", b"A")):
        expected.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    assert sha256_path(str(d)) == expected.hexdigest()
    assert size_path(str(d)) == 3


def test_sha256_of_directory_changes_with_a_rename_or_a_byte(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    before = sha256_path(str(d))
    (d / "x").rename(d / "y")
    renamed = sha256_path(str(d))
    (d / "y").write_bytes(b"2")
    assert len({before, renamed, sha256_path(str(d))}) == 3


def test_sha256_of_missing_path_is_input_error(tmp_path):
    with pytest.raises(InputError) as err:
        sha256_path(str(tmp_path / "nope"))
    assert err.value.msg.startswith("Failed to checksum backup ")


def test_manifest_path_for():
    assert manifest_path_for("/b/x.dump") == "/b/x.dump.manifest.json"
    assert manifest_path_for("/b/x.dir/") == "/b/x.dir.manifest.json"
    assert manifest_path_for("/b/x.dump.manifest.json") == "/b/x.dump.manifest.json"


def test_write_manifest_is_0600_json_and_round_trips(tmp_path):
    path, mpath = _backup(tmp_path)
    assert mpath == str(path) + ".manifest.json"
    assert stat.S_IMODE(os.stat(mpath).st_mode) == 0o600
    data = json.loads(open(mpath).read())
    assert data["manifest_format"] == 1
    assert "manifest_path" not in data
    loaded = load_manifest(str(path))
    assert loaded["manifest_path"] == mpath
    assert loaded["database"] == "chatai"
    assert load_manifest(mpath)["sha256"] == data["sha256"]
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".partial")]


def test_load_missing_manifest(tmp_path):
    with pytest.raises(InputError) as err:
        load_manifest(str(tmp_path / "gone.dump"))
    assert err.value.msg == "Failed to load backup manifest %s: the manifest does not exist" % (
        tmp_path / "gone.dump.manifest.json")


@pytest.mark.parametrize("text,reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "x"}', "missing keys: path, kind, format, sha256"),
])
def test_load_invalid_manifest(tmp_path, text, reason):
    m = tmp_path / "x.dump.manifest.json"
    m.write_text(text)
    with pytest.raises(InputError) as err:
        load_manifest(str(m))
    assert reason in err.value.msg


def test_verify_ok_sets_verified(tmp_path):
    path, mpath = _backup(tmp_path)
    for arg in (mpath, str(path), load_manifest(mpath)):
        assert verify_manifest(arg)["verified"] is True


def test_verify_checksum_mismatch_refuses(tmp_path):
    path, mpath = _backup(tmp_path)
    path.write_bytes(b"PGDMP tampered")
    with pytest.raises(SafetyRefusal) as err:
        verify_manifest(mpath)
    assert err.value.msg.startswith("Failed to verify backup %s: checksum mismatch" % path)
    assert err.value.extra["actual_sha256"] == hashlib.sha256(b"PGDMP tampered").hexdigest()


def test_verify_missing_backup_refuses(tmp_path):
    path, mpath = _backup(tmp_path)
    path.unlink()
    with pytest.raises(SafetyRefusal):
        verify_manifest(mpath)


def test_moved_pair_is_found_beside_the_manifest(tmp_path):
    path, mpath = _backup(tmp_path)
    other = tmp_path / "moved"
    other.mkdir()
    os.rename(str(path), str(other / path.name))
    os.rename(mpath, str(other / os.path.basename(mpath)))
    m = verify_manifest(str(other / os.path.basename(mpath)))
    assert m["path"] == str(other / path.name)


# ---------------------------------------------------------------------------------- sha256_scheme "files"

def _dump_dir(tmp_path, n=12):
    d = tmp_path / "chatai-x.dir"
    d.mkdir()
    for i in range(n):
        (d / ("%d.dat" % (3000 + i))).write_bytes(os.urandom(1000 * i + 3) * (i + 1))
    (d / "toc.dat").write_bytes(b"PGDMP toc")
    return d


def _files_manifest(d):
    files = hash_files(str(d))
    manifest = dict(name=d.name, path=str(d), kind="logical", format="directory", sha256=files_digest(files),
                    sha256_scheme=SCHEME_FILES, files=files)
    return files, write_manifest(str(d), manifest)


def test_hash_files_equals_an_independent_sha256_of_each_file(tmp_path):
    d = _dump_dir(tmp_path)
    files = hash_files(str(d), threads=4)
    assert sorted(files) == sorted(os.listdir(d))
    for rel, entry in files.items():
        data = (d / rel).read_bytes()
        assert entry == dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def line(rel):
        data = (d / rel).read_bytes()
        return ("%s\0%d\0%s\n" % (rel, len(data), hashlib.sha256(data).hexdigest())).encode()
    listing = b"".join(line(rel) for rel in sorted(os.listdir(d)))
    assert files_digest(files) == hashlib.sha256(listing).hexdigest()
    assert checksum_path(str(d)) == (files_digest(files), files)
    assert hash_files(str(d), threads=1) == files  # the thread count does not change the result


def test_hash_files_chmods_through_the_open_file(tmp_path):
    d = _dump_dir(tmp_path, n=3)
    for p in d.iterdir():
        os.chmod(p, 0o644)
    hash_files(str(d), file_mode=0o600)
    assert {stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {0o600}
    f = tmp_path / "one.dump"
    f.write_bytes(b"x" * 3000000)
    os.chmod(f, 0o644)
    assert hash_file(str(f), 0o600) == (3000000, hashlib.sha256(b"x" * 3000000).hexdigest())
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_hash_files_ignores_symlinks(tmp_path):
    d = _dump_dir(tmp_path, n=2)
    os.symlink("/nonexistent", str(d / "link"))  # symlinks are not backup files: ignored
    assert "link" not in hash_files(str(d))


def test_an_error_in_a_hashing_thread_is_raised_in_the_caller(tmp_path, monkeypatch):
    from ansible_collections.replyx.rollback.plugins.module_utils import _manifest
    d = _dump_dir(tmp_path, n=6)
    real = _manifest.hash_file

    def flaky(path, mode=None):
        if path.endswith("3004.dat"):
            raise OSError(5, "Input/output error")
        return real(path, mode)
    monkeypatch.setattr(_manifest, "hash_file", flaky)
    with pytest.raises(OSError):
        hash_files(str(d), threads=3)


def test_verify_files_scheme_ok(tmp_path):
    d = _dump_dir(tmp_path)
    dummy, mpath = _files_manifest(d)
    assert verify_manifest(mpath)["verified"] is True


@pytest.mark.parametrize("damage,named", [
    (lambda d: (d / "3005.dat").write_bytes(b"Z" + (d / "3005.dat").read_bytes()[1:]), "3005.dat has sha256"),
    (lambda d: (d / "3004.dat").unlink(), "3004.dat is missing"),
    (lambda d: (d / "9999.dat").write_bytes(b"extra"), "9999.dat is not in the manifest"),
    (lambda d: (d / "3003.dat").write_bytes(b"short"), "3003.dat has 5 bytes"),
])
def test_verify_files_scheme_names_the_damaged_file(tmp_path, damage, named):
    d = _dump_dir(tmp_path)
    dummy, mpath = _files_manifest(d)
    damage(d)
    with pytest.raises(SafetyRefusal) as exc:
        verify_manifest(mpath)
    assert "checksum mismatch" in exc.value.reason and named in exc.value.reason, exc.value.reason


def test_verify_files_scheme_refuses_a_changed_top_level_sha256(tmp_path):
    d = _dump_dir(tmp_path)
    files, mpath = _files_manifest(d)
    data = json.loads(open(mpath).read())
    data["sha256"] = "0" * 64  # per-file entries still match: the top-level checksum is checked too
    open(mpath, "w").write(json.dumps(data))
    with pytest.raises(SafetyRefusal):
        verify_manifest(mpath)


def test_manifests_without_a_scheme_still_verify_with_the_stream_checksum(tmp_path):
    d = _dump_dir(tmp_path)
    manifest = dict(name=d.name, path=str(d), kind="logical", format="directory", sha256=sha256_path(str(d)))
    mpath = write_manifest(str(d), manifest)
    assert verify_manifest(mpath)["verified"] is True
    (d / "3001.dat").write_bytes(b"changed")
    with pytest.raises(SafetyRefusal):
        verify_manifest(mpath)


def test_an_unknown_scheme_is_refused(tmp_path):
    d = _dump_dir(tmp_path, n=1)
    mpath = write_manifest(str(d), dict(name=d.name, path=str(d), kind="logical", format="directory",
                                        sha256="a" * 64, sha256_scheme="md5-someday"))
    with pytest.raises(SafetyRefusal) as exc:
        verify_manifest(mpath)
    assert "unknown sha256_scheme" in exc.value.reason
