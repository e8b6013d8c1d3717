# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup manifest: a JSON file next to each backup, ``<name>.manifest.json``.

Stable API (imported by pg_pitr_restore and alembic_downgrade):

- ``sha256_path(path)``: hex sha256 of a file, or of a directory (sorted relative paths + contents);
  the checksum of manifests without ``sha256_scheme`` (written before the per-file scheme).
- ``hash_files(root, ...)``: every file of a directory hashed once, in parallel threads (hashlib releases
  the GIL): ``{relpath: {"size": n, "sha256": hex}}``; optionally chmods each file through its open fd.
- ``files_digest(files)``: the directory checksum of ``sha256_scheme: files`` (sha256 over the sorted
  lines ``relpath NUL size NUL sha256 LF``).
- ``checksum_path(path, scheme)``: the checksum of a backup path under a scheme.
- ``manifest_path_for(path)``: the manifest path of a backup path (or the path itself if it is one).
- ``load_manifest(path)``: the manifest dict; ``InputError`` if missing or invalid.
- ``verify_manifest(manifest_or_path)``: recomputes the checksum; ``SafetyRefusal`` on mismatch or if
  the backup is gone; returns the manifest with ``verified: true``.
- ``write_manifest(path, manifest)``: atomic write (temporary file + rename), mode 0600.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import tempfile
import threading

from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_KEYS = ("name", "path", "kind", "format", "sha256")
_CHUNK = 1024 * 1024
# sha256_scheme of a manifest: "stream" (absent: manifests written before it) is one sha256 over a
# directory's files in sorted order; "files" is one sha256 per file, computed in parallel, and the
# directory's sha256 over the sorted per-file lines (files_digest). A single file is its sha256 in both.
SCHEME_STREAM = "stream"
SCHEME_FILES = "files"
MAX_HASH_THREADS = 8


def _hash_file_into(digest, path):
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)


def _directory_files(root):
    """Relative paths (with '/') of every regular file below root, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(found)


def hash_file(path, mode=None):
    """(size, hex sha256) of one file, read once; ``mode``: fchmod the open file first (no second walk)."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        while True:
            n = os.readv(fd, [buf]) if hasattr(os, "readv") else _read_into(fd, buf)
            if not n:
                break
            digest.update(view[:n])  # hashlib releases the GIL for large updates
            size += n
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def _read_into(fd, buf):  # pragma: no cover - platforms without readv
    data = os.read(fd, len(buf))
    buf[:len(data)] = data
    return len(data)


def hash_threads(count):
    return max(1, min(MAX_HASH_THREADS, os.cpu_count() or 1, count))


def hash_files(root, file_mode=None, threads=None):
    """``{relpath: {"size": n, "sha256": hex}}`` of every regular file below root, each file read once,
    ``threads`` (default: CPUs, at most 8) at a time. ``file_mode``: also chmod each file to it."""
    rels = _directory_files(root)
    results = {}
    errors = []
    pending = list(reversed(rels))  # largest-first would be nicer; pop() order is fine for page-cache reads
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending or errors:
                    return
                rel = pending.pop()
            try:
                size, hexdigest = hash_file(os.path.join(root, rel), file_mode)
            except BaseException as exc:  # re-raised in the caller's thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                results[rel] = dict(size=size, sha256=hexdigest)

    n = threads or hash_threads(len(rels))
    workers = [threading.Thread(target=worker, name="replyx-hash-%d" % i) for i in range(min(n, len(rels)))]
    for t in workers:
        t.daemon = True
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return dict((rel, results[rel]) for rel in rels)


def files_digest(files):
    """The directory checksum of scheme "files": sha256 over ``relpath NUL size NUL sha256 LF``, sorted."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        entry = files[rel]
        digest.update(("%s\0%d\0%s\n" % (rel, entry["size"], entry["sha256"])).encode("utf-8"))
    return digest.hexdigest()


def checksum_path(path, scheme=SCHEME_FILES):
    """(sha256, files or None) of a backup path under ``scheme`` (None/"stream": sha256_path)."""
    if os.path.isdir(path) and scheme == SCHEME_FILES:
        files = hash_files(path)
        return files_digest(files), files
    if os.path.isfile(path) and scheme == SCHEME_FILES:
        return hash_file(path)[1], None
    return sha256_path(path), None


def sha256_path(path):
    """Hex sha256 of a file; of a directory: for each file in sorted relative-path order,
    ``relpath NUL size NUL contents``. Raises InputError if the path does not exist."""
    if os.path.isfile(path):
        digest = hashlib.sha256()
        _hash_file_into(digest, path)
        return digest.hexdigest()
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for rel in _directory_files(path):
            full = os.path.join(path, rel)
            digest.update(rel.encode("utf-8") + b"\0")
            digest.update(str(os.path.getsize(full)).encode("ascii") + b"\0")
            _hash_file_into(digest, full)
        return digest.hexdigest()
    raise InputError("%s does not exist" % path, verb="checksum", obj="backup %s" % path)


def size_path(path):
    """Bytes of a file, or the sum over the files of a directory."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, rel)) for rel in _directory_files(path))
    return os.path.getsize(path)


def manifest_path_for(path):
    """``<backup>.manifest.json`` for a backup path; a path already naming a manifest is returned as is."""
    path = path.rstrip(os.sep) or path
    if path.endswith(MANIFEST_SUFFIX):
        return path
    return path + MANIFEST_SUFFIX


def load_manifest(path):
    """Read a manifest (given its own path or its backup's path). InputError if missing or invalid."""
    mpath = manifest_path_for(path)
    obj = "backup manifest %s" % mpath
    if not os.path.isfile(mpath):
        raise InputError("the manifest does not exist", verb="load", obj=obj)
    try:
        with open(mpath, "r") as fh:
            manifest = json.load(fh)
    except ValueError as exc:
        raise InputError("not valid JSON (%s)" % exc, verb="load", obj=obj)
    except (IOError, OSError) as exc:
        raise InputError("cannot read it (%s)" % exc, verb="load", obj=obj)
    if not isinstance(manifest, dict):
        raise InputError("expected a JSON object", verb="load", obj=obj)
    missing = [k for k in REQUIRED_KEYS if not manifest.get(k)]
    if missing:
        raise InputError("missing keys: %s" % ", ".join(missing), verb="load", obj=obj)
    manifest["manifest_path"] = mpath
    # A manifest travels with its backup: if the pair was moved, the backup sits next to the manifest.
    beside = mpath[:-len(MANIFEST_SUFFIX)]
    if not os.path.exists(manifest["path"]) and os.path.exists(beside):
        manifest["path"] = beside
    return manifest


def verify_manifest(manifest_or_path):
    """Recompute the backup's checksum. SafetyRefusal on mismatch or missing backup.

    Accepts a manifest dict (from load_manifest) or a path (manifest or backup).
    Returns the manifest with ``verified: true``.
    """
    if isinstance(manifest_or_path, dict):
        manifest = dict(manifest_or_path)
    else:
        manifest = load_manifest(manifest_or_path)
    path = manifest["path"]
    obj = "backup %s" % path
    if not os.path.exists(path):
        raise SafetyRefusal("the backup named by the manifest does not exist", verb="verify", obj=obj)
    scheme = manifest.get("sha256_scheme") or SCHEME_STREAM
    if scheme not in (SCHEME_STREAM, SCHEME_FILES):
        raise SafetyRefusal("unknown sha256_scheme %r in the manifest" % scheme, verb="verify", obj=obj)
    actual, files = checksum_path(path, scheme)
    expected_files = manifest.get("files")
    if files is not None and isinstance(expected_files, dict):
        problems = _file_differences(expected_files, files)
        if problems:
            raise SafetyRefusal("checksum mismatch (%s): the backup was altered or is incomplete"
                                % "; ".join(problems[:5] + (["..."] if len(problems) > 5 else [])),
                                verb="verify", obj=obj, expected_sha256=manifest["sha256"], actual_sha256=actual,
                                files_differing=problems)
    if actual != manifest["sha256"]:
        raise SafetyRefusal("checksum mismatch (manifest sha256 %s, actual %s): the backup was altered or is "
                            "incomplete" % (manifest["sha256"], actual), verb="verify", obj=obj,
                            expected_sha256=manifest["sha256"], actual_sha256=actual)
    manifest["verified"] = True
    return manifest


def _file_differences(expected, actual):
    """Named differences between the manifest's per-file checksums and the files on disk."""
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        want, got = expected.get(rel), actual.get(rel)
        if got is None:
            problems.append("%s is missing" % rel)
        elif want is None:
            problems.append("%s is not in the manifest" % rel)
        elif want.get("size") != got["size"]:
            problems.append("%s has %d bytes, the manifest %s" % (rel, got["size"], want.get("size")))
        elif want.get("sha256") != got["sha256"]:
            problems.append("%s has sha256 %s, the manifest %s"
                            % (rel, got["sha256"][:12], str(want.get("sha256"))[:12]))
    return problems


def write_manifest(path, manifest):
    """Write the manifest atomically with mode 0600; returns the manifest path."""
    mpath = manifest_path_for(path)
    directory = os.path.dirname(os.path.abspath(mpath))
    data = dict((k, v) for k, v in manifest.items() if k != "manifest_path")
    data.setdefault("manifest_format", MANIFEST_FORMAT)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, mpath)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return mpath
