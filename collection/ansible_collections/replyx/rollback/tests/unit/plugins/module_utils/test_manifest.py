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
    load_manifest, manifest_path_for, sha256_path, size_path, verify_manifest, write_manifest)


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
