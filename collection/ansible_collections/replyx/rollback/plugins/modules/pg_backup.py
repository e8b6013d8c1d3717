#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_backup
short_description: Take a verified PostgreSQL backup (pg_dump or pg_basebackup) with a JSON manifest
version_added: 1.0.0
description:
  - Takes a logical backup of one database with C(pg_dump) (formats custom, directory with parallel jobs, or plain SQL)
    or a physical base backup of the whole cluster with C(pg_basebackup) (for point-in-time recovery).
  - The backup is written to C(<name>.partial) and renamed to C(<name>) only when complete and verified. A logical
    backup is verified with C(pg_restore --list) (plain format - the dump's completion comment); a physical one with
    C(pg_verifybackup) when the client tools can read its format. Any error line (C(pg_dump) error, C(ERROR), C(FATAL)) on
    the tool's standard error is a failure even if the tool exits with 0. On failure the partial backup is removed
    and no manifest is written.
  - Files are made private (mode 0600, directories 0700) and a JSON manifest C(<name>.manifest.json) is written next
    to the backup with the sha256 checksum, size, server version, the alembic revision (when the database has an
    C(alembic_version) table), the row count of every table in the backup, and for physical backups the start and
    stop LSN, timeline and WAL file names.
  - Every file the tool wrote is read once after it exits - in parallel threads that hash it and make it private,
    while C(pg_restore --list) verifies the archive and the rows are counted; a plain dump is checked for its
    completion comment in the same read that hashes it.
  - Row counts (O(row_counts=exact), the default) are taken in the very snapshot pg_dump backs up (C(--snapshot)),
    so they match the backup exactly; M(replyx.rollback.pg_restore) compares them after a restore.
  - With O(label), the backup is idempotent - an existing backup with that label whose checksum still matches its
    manifest is returned unchanged (C(changed=false)).
  - Retention (O(keep_last), O(max_age_days)) removes older backups of the same database and kind in O(dest), never
    the newest verified backup and never the one just taken.
  - The password travels to the tools in the environment (E(PGPASSWORD)), never on the command line nor in results.
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Connects to the server (read-only) and returns the exact commands in RV(commands) and the retention plan in
        RV(deleted); writes and deletes nothing. The C(--snapshot) value of C(pg_dump) is only known at run time and
        is shown as C(SNAPSHOT-EXPORTED-AT-RUN-TIME).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  dest:
    description:
      - Directory the backup and its manifest are written to. Created with mode 0700 when missing.
    type: path
    required: true
  kind:
    description:
      - C(logical) backs up the database O(login_db) with C(pg_dump).
      - C(physical) takes a base backup of the whole cluster with C(pg_basebackup) (needs a role with the
        REPLICATION attribute and a C(replication) entry in C(pg_hba.conf)).
    type: str
    default: logical
    choices: [logical, physical]
  format:
    description:
      - For O(kind=logical) one of C(custom) (default, file C(<db>-<stamp>.dump)), C(directory) (C(<db>-<stamp>.dir),
        allows O(jobs)) or C(plain) (SQL, C(<db>-<stamp>.sql), restored with C(psql)).
      - For O(kind=physical) C(tar) (default) or C(plain) (a data directory), in C(base-<stamp>).
    type: str
    choices: [custom, directory, plain, tar]
  label:
    description:
      - Name of the backup instead of a UTC time stamp; makes the task idempotent.
      - Letters, digits, C(.), C(_) and C(-).
    type: str
  jobs:
    description:
      - Parallel dump jobs; only for O(kind=logical) with O(format=directory).
    type: int
    default: 1
  compress:
    description:
      - Compression passed to the tool as C(--compress=<value>), for example C(6), C(gzip:6), C(zstd) or C(none).
      - For physical backups only with O(format=tar).
    type: str
  tables:
    description:
      - Back up only these tables (C(pg_dump --table) patterns).
    type: list
    elements: str
    default: []
  exclude_tables:
    description:
      - Leave out these tables (C(pg_dump --exclude-table) patterns).
    type: list
    elements: str
    default: []
  schemas:
    description:
      - Back up only these schemas (C(pg_dump --schema) patterns).
    type: list
    elements: str
    default: []
  exclude_schemas:
    description:
      - Leave out these schemas (C(pg_dump --exclude-schema) patterns).
    type: list
    elements: str
    default: []
  row_counts:
    description:
      - How the manifest counts the rows of each backed-up table.
      - C(exact) counts in the snapshot the dump is taken from (the default, because the restore compares them
        and C(playbooks/backup.yml) shows them); C(estimate) uses the planner's statistics; C(none) records no
        counts and exports no snapshot (the restore then cannot compare them).
      - The counts run while the dump's files are hashed, so they seldom add to the backup's time; the
        benchmark (C(docs/benchmarks.md)) measures C(exact) against C(none).
    type: str
    default: exact
    choices: [exact, estimate, none]
  wal_method:
    description:
      - How a physical backup includes the WAL it needs (C(pg_basebackup --wal-method)).
    type: str
    default: stream
    choices: [stream, fetch]
  checkpoint:
    description:
      - Checkpoint mode of a physical backup; C(fast) starts the backup at once.
    type: str
    default: fast
    choices: [fast, spread]
  keep_last:
    description:
      - After the backup, keep only this many backups of the same database and kind in O(dest).
    type: int
  max_age_days:
    description:
      - After the backup, delete backups of the same database and kind in O(dest) older than this many days.
    type: float
notes:
  - The manifest's C(sha256) of a file backup is the file's sha256. Of a directory backup (C(sha256_scheme) C(files))
    it is the sha256 over one line per file in sorted relative-path order, C(relative path NUL size NUL sha256 LF),
    and C(files) lists every file's size and sha256, so a restore names the file that differs.
  - Manifests written before C(sha256_scheme) existed (directory sha256 over the files' contents in sorted order)
    still verify.
  - Forensic backups taken by M(replyx.rollback.pg_restore) are never removed by retention.
requirements:
  - psycopg >= 3.1 on the managed host
  - PostgreSQL client tools (pg_dump, pg_restore, pg_basebackup) of the server's major version or newer
seealso:
  - module: replyx.rollback.pg_restore
  - module: replyx.rollback.pg_pitr_restore
"""

EXAMPLES = r"""
- name: Back up chatai before the migration rollback (idempotent by label)
  replyx.rollback.pg_backup:
    database_url: "{{ replyx_database_url }}"
    dest: /var/backups/replyx
    label: pre-rollback-{{ ansible_date_time.date }}
    format: directory
    jobs: 4
    keep_last: 10
  register: backup

- name: Base backup for point-in-time recovery
  replyx.rollback.pg_backup:
    login_host: 127.0.0.1
    login_user: replicator
    login_password: "{{ replicator_password }}"
    kind: physical
    dest: /var/backups/replyx/base
    max_age_days: 14

- name: Only the users table, plain SQL, with the PostgreSQL 15 client tools
  replyx.rollback.pg_backup:
    login_db: chatai
    login_password: "{{ pg_password }}"
    pg_bin_dir: /usr/lib/postgresql/15/bin
    format: plain
    tables: [public.users]
    dest: /var/backups/replyx/tables
"""

RETURN = r"""
backup:
  description:
    - The manifest of the backup (also written to RV(manifest_path)). In check mode only name, path, database,
      kind, format and label.
  returned: always
  type: dict
  contains:
    id:
      description: Identifier of the backup (its file name).
      type: str
      sample: chatai-pre-rollback.dump
    name:
      description: File (or directory) name of the backup.
      type: str
      sample: chatai-pre-rollback.dump
    path:
      description: Absolute path of the backup.
      type: str
      sample: /var/backups/replyx/chatai-pre-rollback.dump
    database:
      description: Database backed up (null for physical backups).
      type: str
      sample: chatai
    kind:
      description: C(logical) or C(physical).
      type: str
      sample: logical
    format:
      description: C(custom), C(directory), C(plain) or C(tar).
      type: str
      sample: custom
    size_bytes:
      description: Size of the backup in bytes.
      type: int
      sample: 1048576
    sha256:
      description: sha256 of the backup file, or of the directory's per-file checksums (see the notes).
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    sha256_scheme:
      description: How RV(backup.sha256) is computed; C(files) (one sha256 per file, hashed in parallel).
      type: str
      sample: files
    files:
      description: Directory backups - size and sha256 of every file, by relative path.
      type: dict
      sample: {"toc.dat": {"size": 2048, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}
    server_version:
      description: Server version at backup time.
      type: str
      sample: "18.0"
    tool_version:
      description: Version line of pg_dump or pg_basebackup.
      type: str
      sample: pg_dump (PostgreSQL) 18.0
    pg_dump_version:
      description: Version line of pg_dump (logical backups).
      type: str
      sample: pg_dump (PostgreSQL) 18.0
    alembic_revision:
      description: Revision in C(alembic_version), or null when the table does not exist.
      type: str
      sample: a1b2c3d4e5f6
    label:
      description: The label, or null.
      type: str
      sample: pre-rollback
    created:
      description: UTC time the backup was completed (ISO 8601).
      type: str
      sample: "2026-01-31T03:12:45Z"
    duration_s:
      description: Seconds the backup took.
      type: float
      sample: 12.5
    tables:
      description: Row count of each table in the backup (schema-qualified), null counts when O(row_counts=none).
      type: dict
      sample: {"public.users": 300, "public.dialogs": 1500}
    extensions:
      description: Extensions created by the backup.
      type: list
      elements: str
      sample: [vector]
    verified:
      description: The backup passed verification and its checksum matches.
      type: bool
      sample: true
    start_lsn:
      description: Physical backups - WAL location the backup starts at.
      type: str
      sample: 0/2000028
    stop_lsn:
      description: Physical backups - WAL location the backup ends at.
      type: str
      sample: 0/2000138
    timeline:
      description: Physical backups - timeline of the backup.
      type: int
      sample: 1
    start_wal_file:
      description: Physical backups - first WAL segment needed.
      type: str
      sample: "000000010000000000000002"
    stop_wal_file:
      description: Physical backups - last WAL segment needed for consistency.
      type: str
      sample: "000000010000000000000002"
    stop_time:
      description: Physical backups - UTC time the base backup finished (ISO 8601).
      type: str
      sample: "2026-01-31T03:12:45Z"
    manifest_path:
      description: Path of the manifest file.
      type: str
      sample: /var/backups/replyx/chatai-pre-rollback.dump.manifest.json
path:
  description: Path of the backup.
  returned: always
  type: str
  sample: /var/backups/replyx/chatai-pre-rollback.dump
manifest_path:
  description: Path of the JSON manifest next to the backup.
  returned: always
  type: str
  sample: /var/backups/replyx/chatai-pre-rollback.dump.manifest.json
commands:
  description:
    - The commands run (check mode - that would run), as argument lists. They never contain the password.
  returned: always
  type: list
  elements: list
  sample: [["/usr/bin/pg_dump", "--format=custom", "--file=/var/backups/replyx/chatai-x.dump.partial",
            "--no-password", "--snapshot=00000003-00000002-1"], ["/usr/bin/pg_restore", "--list",
            "/var/backups/replyx/chatai-x.dump.partial"]]
timings:
  description:
    - Seconds of the module's own steps - C(connect_s) (connection, server facts, snapshot), C(dump_s) (the tool),
      C(verify_s) (C(pg_restore --list) or the plain dump's scan), C(row_counts_s), C(checksum_s) (the hashing
      threads, overlapping the previous two), C(checksum_wait_s) (waited for them afterwards) and C(total_s).
    - The time of the task minus C(total_s) is Ansible's start-up and the module's load.
  returned: when a backup was written
  type: dict
  sample: {"connect_s": 0.02, "dump_s": 2.4, "verify_s": 0.01, "row_counts_s": 0.04, "checksum_s": 0.2,
           "checksum_wait_s": 0.15, "total_s": 2.6}
deleted:
  description: Backups removed by retention (check mode - that would be removed).
  returned: always
  type: list
  elements: str
  sample: [/var/backups/replyx/chatai-20260101T000000Z.dump]
msg:
  description: What happened.
  returned: always
  type: str
  sample: backup /var/backups/replyx/chatai-pre-rollback.dump written and verified
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._backup import backup_argument_spec, run_backup
from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._pg import pg_common_argument_spec


def main():
    argument_spec = pg_common_argument_spec()
    argument_spec.update(backup_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        module.exit_json(**run_backup(module))
    except ReplyxError as exc:
        fail_from(module, exc, changed=False)


if __name__ == "__main__":
    main()
