#!/usr/bin/env python3
"""Find the newest verified backup in a directory of replyx.rollback.pg_backup backups.

Usage: newest_verified_backup.py DIR [KIND] [--no-verify]   (KIND: logical (default), physical or any)

--no-verify lists without recomputing checksums (triage: seconds count; preflight verifies): the newest
backup whose manifest is complete and whose files exist, with "verified": false.

Reads every <name>.manifest.json (pg_backup's manifest format, module_utils/_manifest.py), newest
'created' first, and recomputes the sha256 of the backup it names: a file's sha256; for a directory
with "sha256_scheme": "files" one sha256 per file (in parallel threads) and the sha256 over the sorted
lines "relpath NUL size NUL sha256 LF"; for a directory of an older manifest (no sha256_scheme) the
sha256 over its files in sorted relative-path order, each fed as "relpath NUL size NUL contents".
Forensic backups and partial backups are ignored. Prints one JSON object:
{"found": bool, "newest": {...manifest summary, "age_h"}, "checked": [{path, ok, reason}]}.
Reads only.
"""
import datetime
import hashlib
import json
import os
import sys
import threading

SUFFIX = ".manifest.json"
REQUIRED = ("name", "path", "kind", "format", "sha256")


def files_below(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(found)


def feed(digest, path):
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def sha256_path(path):
    digest = hashlib.sha256()
    if os.path.isfile(path):
        feed(digest, path)
    else:
        for rel in files_below(path):
            full = os.path.join(path, rel)
            digest.update(rel.encode("utf-8") + b"\0")
            digest.update(str(os.path.getsize(full)).encode("ascii") + b"\0")
            feed(digest, full)
    return digest.hexdigest()


def sha256_files(path):
    """sha256_scheme "files": each file hashed once in parallel threads, then the sorted listing."""
    rels = files_below(path)
    sums = {}
    pending = list(rels)
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not pending:
                    return
                rel = pending.pop()
            digest = hashlib.sha256()
            full = os.path.join(path, rel)
            feed(digest, full)
            with lock:
                sums[rel] = (os.path.getsize(full), digest.hexdigest())

    threads = [threading.Thread(target=work) for _ in range(max(1, min(8, os.cpu_count() or 1, len(rels))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listing = hashlib.sha256()
    for rel in sorted(sums):
        listing.update(("%s\0%d\0%s\n" % (rel, sums[rel][0], sums[rel][1])).encode("utf-8"))
    return listing.hexdigest()


def checksum(data):
    if os.path.isdir(data["path"]) and data.get("sha256_scheme") == "files":
        return sha256_files(data["path"])
    return sha256_path(data["path"])


def parse_time(text):
    text = (text or "").replace("Z", "+00:00")
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verify = "--no-verify" not in sys.argv[1:]
    directory = args[0]
    kind = args[1] if len(args) > 1 else "logical"
    now = datetime.datetime.now(datetime.timezone.utc)
    manifests = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if not name.endswith(SUFFIX):
                continue
            mpath = os.path.join(directory, name)
            try:
                with open(mpath) as fh:
                    data = json.load(fh)
            except (OSError, ValueError) as exc:
                manifests.append(({"manifest_path": mpath}, "unreadable manifest: %s" % exc))
                continue
            if not isinstance(data, dict) or any(not data.get(k) for k in REQUIRED):
                manifests.append(({"manifest_path": mpath}, "manifest misses one of %s" % ", ".join(REQUIRED)))
                continue
            data["manifest_path"] = mpath
            beside = mpath[:-len(SUFFIX)]
            if not os.path.exists(data["path"]) and os.path.exists(beside):
                data["path"] = beside
            manifests.append((data, None))

    def created(item):
        try:
            return parse_time(item[0].get("created")).timestamp()
        except (TypeError, ValueError):
            return 0.0

    checked, newest = [], None
    for data, problem in sorted(manifests, key=created, reverse=True):
        entry = {"manifest_path": data.get("manifest_path"), "path": data.get("path"), "ok": False}
        if problem is None and data.get("forensic"):
            problem = "forensic backup (not a deployment backup)"
        if problem is None and kind != "any" and data.get("kind") != kind:
            problem = "kind %s, not %s" % (data.get("kind"), kind)
        if problem is None and not os.path.exists(data["path"]):
            problem = "the backup named by the manifest does not exist"
        if problem is None and verify:
            actual = checksum(data)
            if actual != data["sha256"]:
                problem = "checksum mismatch (manifest %s, actual %s)" % (data["sha256"][:12], actual[:12])
        if problem is None:
            try:
                age_h = (now - parse_time(data.get("created"))).total_seconds() / 3600.0
            except (TypeError, ValueError):
                problem = "no valid 'created' time"
        entry["reason"] = problem or ("verified" if verify else "listed (checksum not recomputed)")
        entry["ok"] = problem is None
        checked.append(entry)
        if problem is None and newest is None:
            newest = dict((k, data.get(k)) for k in (
                "name", "path", "manifest_path", "kind", "format", "database", "label", "created", "sha256",
                "size_bytes", "alembic_revision", "server_version"))
            newest["age_h"] = round(age_h, 4)
            newest["verified"] = verify
    print(json.dumps({"found": newest is not None, "newest": newest, "checked": checked, "directory": directory}))


if __name__ == "__main__":
    main()
