#!/usr/bin/env python3
# Installed by the replyx postgres role (roles/postgres/files); Python 3 standard library only.
"""archive_command of a ReplyX PostgreSQL host: copy one WAL file into the archive so that no partial
file is ever visible under its final name.

    replyx_archive_wal.py SOURCE DESTINATION        (archive_command = '... %p /archive/dir/%f')
    replyx_archive_wal.py --check ARCHIVE_DIR       (can this user archive there? the role runs it)

1. DESTINATION exists with the same bytes as SOURCE: success (a retry after a crash between the rename
   and PostgreSQL recording the success; PostgreSQL's documentation asks for exactly this).
2. DESTINATION exists with other bytes: failure, and a message on stderr (the server log) - never
   overwrite what the archive holds.
3. Otherwise: copy to a temporary name in the destination directory, fsync it, rename it to
   DESTINATION (atomic on one filesystem), fsync the directory.

Exit 0 on success only; PostgreSQL retries a non-zero exit and counts it in pg_stat_archiver.
"""

import os
import sys

BUFSIZE = 1 << 20


def _same_content(path_a, path_b):
    if os.path.getsize(path_a) != os.path.getsize(path_b):
        return False
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        while True:
            chunk_a, chunk_b = fa.read(BUFSIZE), fb.read(BUFSIZE)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive(source, destination):
    """Archive source as destination; returns a message, raises EnvironmentError or ValueError on failure."""
    directory = os.path.dirname(os.path.abspath(destination))
    name = os.path.basename(destination)
    if os.path.exists(destination):
        if _same_content(source, destination):
            return "%s is already archived with identical content" % name
        raise ValueError("%s already exists in %s with different content: refusing to overwrite it (another "
                         "server archiving into the same directory, or a damaged archive)" % (name, directory))
    if not os.path.isdir(directory):
        raise ValueError("the archive directory %s does not exist" % directory)
    # One archiver per server: a fixed temporary name, so a copy interrupted by a crash is replaced by the
    # retry instead of being left behind. The leading dot keeps it out of the WAL file name patterns.
    temporary = os.path.join(directory, ".%s.replyx-partial" % name)
    try:
        with open(source, "rb") as src:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                while True:
                    chunk = src.read(BUFSIZE)
                    if not chunk:
                        break
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        os.rename(temporary, destination)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return "%s archived" % name


def check(directory):
    """Write, fsync and remove a probe file in the archive directory: what archiving needs."""
    if not os.path.isdir(directory):
        raise ValueError("the archive directory %s does not exist" % directory)
    probe = os.path.join(directory, ".replyx-archive-check.%d" % os.getpid())
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"replyx")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)
    _fsync_dir(directory)
    return "%s is writable" % directory


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        try:
            sys.stdout.write(check(argv[2]) + "\n")
        except (EnvironmentError, ValueError) as exc:
            sys.stderr.write("replyx_archive_wal: cannot archive into %s: %s\n" % (argv[2], exc))
            return 1
        return 0
    if len(argv) != 3:
        sys.stderr.write("usage: %s SOURCE DESTINATION (archive_command = '... %%p /archive/dir/%%f')\n" % argv[0])
        return 2
    try:
        archive(argv[1], argv[2])
    except (EnvironmentError, ValueError) as exc:
        sys.stderr.write("replyx_archive_wal: failed to archive %s as %s: %s\n" % (argv[1], argv[2], exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
