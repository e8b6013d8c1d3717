#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_physical_restore
short_description: Restore a PostgreSQL data directory in place from a physical base backup and replay the WAL archive
version_added: 1.0.0
description:
  - A full restore from a physical base backup (taken by M(replyx.rollback.pg_backup) with
    O(replyx.rollback.pg_backup#module:kind=physical)) and the WAL archive, written into the existing O(data_dir) with a
    delta (only the files that differ), like C(pgBackRest --delta).
  - Preflight checks, before anything changes and as M(replyx.rollback.pg_pitr_restore) does, the backup's sha256
    against its manifest, that every WAL segment file from the backup's start onwards is in O(wal_archive) without a
    gap along the target timeline, that the PostgreSQL major version of the backup matches the tools, and that there
    is free disk for the restore and the forensic copy.
  - Without a recovery target, recovery replays every archived WAL segment and promotes; that is for damage WAL does
    not carry (deleted or corrupted files). For damage done through SQL (a dropped table, deleted rows) give a target
    before it (O(target_time), O(target_lsn), O(target_xid), O(target_name)).
  - Then it stops the server if it runs, copies the current data directory to O(forensic_dir)/<name>-<UTC timestamp>
    (unless O(forensic_copy=false)), and compares every file of the base backup with the data directory. A file is
    copied when it is missing, of another kind or size, or its sha256 differs from the backup's; paths the backup does
    not have are removed (C(pg_wal) included, so recovery reads the archive). Last C(recovery.signal) and the recovery
    settings are written, the server starts and the module waits for the target.
  - The per-file sha256 of the backup is computed from the backup itself (the members of C(base.tar) and
    C(pg_wal.tar), or the files of a plain backup) after the whole backup's checksum was verified, so it does not
    depend on the checksum algorithm of PostgreSQL's C(backup_manifest).
  - Row counts of every table of every database are read before (when the server runs) and after, and the
    differences are returned.
  - The restored server runs with C(archive_mode=off) by default (O(restored_archiving=off)); take a new base backup
    after turning archiving back on.
  - If a step after preflight fails, the failure lists where everything is (O(data_dir), forensic copy, server log,
    steps done).
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
  - replyx.rollback.recovery
attributes:
  check_mode:
    support: full
    description: Runs the whole preflight and returns the plan and a preview of the delta (files that would be copied); changes nothing.
  diff_mode:
    support: none
    description: Reports no diff.
options:
  forensic_dir:
    description:
      - Where the copy of the current data directory goes, as C(<data_dir name>-<UTC timestamp>).
      - Defaults to the parent directory of O(data_dir).
    type: path
  forensic_copy:
    description:
      - Copy the current data directory to O(forensic_dir) before anything is written into it.
      - V(false) skips the copy (faster, needs no space); the damaged state is then gone.
    type: bool
    default: true
  delta:
    description:
      - V(true) writes only the files whose size or sha256 differs from the base backup's.
      - V(false) writes every file of the backup (paths not in the backup are removed either way).
    type: bool
    default: true
  row_counts:
    description:
      - Count the rows of every table of every database before (when the server runs) and after the restore.
    type: bool
    default: true
  target_time:
    description:
      - Recover up to this time. It must carry a time zone, as C(select now()) prints it (C(2026-01-31 03:12:45.123+00)).
      - At most one of O(target_time), O(target_lsn), O(target_xid), O(target_name), O(target_immediate); none recovers to
        the end of the archived WAL.
    type: str
notes:
  - The connection options are those of the restored server (used for the row counts and to watch recovery).
  - Tablespaces and compressed WAL archives are not supported; the preflight refuses them.
  - WAL not yet archived is not replayed; run C(SELECT pg_switch_wal()) on the old server first if it still runs.
seealso:
  - module: replyx.rollback.pg_backup
  - module: replyx.rollback.pg_pitr_restore
  - name: pgBackRest restore delta option
    description: The same idea in pgBackRest.
    link: https://pgbackrest.org/command.html#command-restore
"""

EXAMPLES = r"""
- name: Put the data directory back from the newest verified base backup and replay the whole archive
  replyx.rollback.pg_physical_restore:
    backup_dir: /srv/backups/postgres
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
    forensic_dir: /srv/forensic
    confirm: true
    login_password: "{{ vault_pg_password }}"
  register: restore

- name: Restore to the moment before a table was dropped, without a forensic copy
  replyx.rollback.pg_physical_restore:
    base_backup: /srv/backups/postgres/base-20260131T020000Z.manifest.json
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
    target_lsn: 0/3000148
    forensic_copy: false
    pg_bin_dir: /usr/lib/postgresql/18/bin
    confirm: true

- name: Which files would be copied
  replyx.rollback.pg_physical_restore:
    backup_dir: /srv/backups/postgres
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
  check_mode: true
"""

RETURN = r"""
delta:
  description:
    - What was written. C(copied) files (each with its reason - missing, type, size, checksum or full), C(skipped)
      files already equal to the backup's, C(removed) paths the backup does not have. In check mode a preview
      (C(preview=true)) read while the server may still run.
  returned: always
  type: dict
  sample:
    mode: delta
    files_in_backup: 1012
    copied: 9
    skipped: 1003
    removed: 41
    directories_created: 0
    reasons: {checksum: 6, size: 2, missing: 1}
    bytes_copied: 8544256
    bytes_skipped: 40157184
    copied_files: ["backup_label (missing)", "base/16384/16390 (checksum)", "global/pg_control (checksum)"]
    removed_files: ["pg_wal/000000010000000000000007"]
row_counts:
  description:
    - Rows per table (C(<database>.<schema>.<table>)) before and after the restore and the tables whose count
      changed; C(before) is null when the server was not running.
  returned: changed
  type: dict
  sample:
    before: {chatai.public.users: 100}
    after: {chatai.public.users: 200, chatai.public.dialog_messages: 3000}
    changes:
      chatai.public.users: {before: 100, after: 200}
      chatai.public.dialog_messages: {before: null, after: 3000}
    note: null
base_backup:
  description: The base backup used (path, layout, start and stop LSN, timeline, size, verified), as M(replyx.rollback.pg_pitr_restore) returns it.
  returned: always
  type: dict
  sample: {path: /srv/backups/base-1, layout: tar, start_lsn: 0/2000028, stop_lsn: 0/2000120, timeline: 1, verified: true}
window:
  description: The WAL the archive holds from the backup on (first and last segment, gap, end LSN), as M(replyx.rollback.pg_pitr_restore) returns it.
  returned: always
  type: dict
  sample: {first_segment: "000000010000000000000002", last_segment: "000000010000000000000005", gap: null, end_lsn: 0/5000060}
target:
  description: The recovery target (C(kind) V(end) when none was given) and where recovery is expected to stop.
  returned: always
  type: dict
  sample:
    kind: end
    value: the end of the archived WAL
    stops: at the end of the archived WAL (last record 0/5000060 in 000000010000000000000005)
    timeline: 1
settings:
  description: The recovery settings written into C(postgresql.auto.conf) (or that would be, in check mode).
  returned: always
  type: dict
  sample: {restore_command: cp /srv/wal_archive/%f %p, recovery_target_timeline: latest, archive_mode: "off"}
steps:
  description: The plan, in order.
  returned: always
  type: list
  elements: str
  sample: ["stop the server on /var/lib/postgresql/18/main (pg_ctl stop -m fast)"]
steps_done:
  description: The steps that were carried out.
  returned: changed
  type: list
  elements: str
  sample: ["stopped the server", "copied /var/lib/postgresql/18/main to /srv/forensic/main-20260131T031500Z"]
server_running:
  description: Whether a server was running on O(data_dir) at the start.
  returned: always
  type: bool
  sample: true
forensic_copy:
  description: Where the current data directory was copied (in check mode, where it would be); null if there was none or O(forensic_copy=false).
  returned: always
  type: str
  sample: /srv/forensic/main-20260131T031500Z
reached:
  description: What recovery reached (promoted, paused, shut_down, timeline, lsn, timestamp), as M(replyx.rollback.pg_pitr_restore) returns it.
  returned: changed
  type: dict
  sample: {promoted: true, timeline: 2, lsn: 0/5000060, timestamp: "2026-01-31 03:12:44.901112+00"}
space:
  description: The free space check, with the size of the forensic copy.
  returned: always
  type: dict
  sample: {required_bytes: 1111490560, free_bytes: 84825440256, filesystem_of: /var/lib/postgresql, forensic_copy_bytes: 52428800}
data_dir:
  description: The data directory recovered into.
  returned: always
  type: str
  sample: /var/lib/postgresql/18/main
wal_archive:
  description: The WAL archive read.
  returned: always
  type: str
  sample: /srv/wal_archive
server_log:
  description: Log file of the recovering server.
  returned: always
  type: str
  sample: /var/lib/postgresql/18/main/log/replyx-restore-20260131T031500Z.log
commands:
  description: External commands run (argv lists) and SQL statements.
  returned: always
  type: list
  elements: raw
  sample: [["/usr/lib/postgresql/18/bin/pg_ctl", "--version"]]
duration:
  description: Seconds the module took.
  returned: always
  type: float
  sample: 14.2
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._pgquery import require_psycopg
from ansible_collections.replyx.rollback.plugins.module_utils._physical import (
    physical_argument_spec, run_physical_restore)


def main():
    module = AnsibleModule(argument_spec=physical_argument_spec(), supports_check_mode=True)
    require_psycopg(module)
    try:
        result = run_physical_restore(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=bool(exc.extra.get("steps_done")))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
