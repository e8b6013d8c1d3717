#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_pitr_restore
short_description: Recover a PostgreSQL data directory to a point in time from a base backup and a WAL archive
version_added: 1.0.0
description:
  - Restores a physical base backup (taken by M(replyx.rollback.pg_backup) with O(replyx.rollback.pg_backup#module:kind=physical),
    that is C(pg_basebackup)) into O(data_dir) and replays archived WAL up to one recovery target.
  - "Preflight, before anything changes: the backup's checksum against its manifest; the target lies inside the
    recoverable window; every WAL segment file from the backup's start segment onwards is in O(wal_archive), in order,
    along the target timeline (following C(.history) files); the PostgreSQL major version of the backup matches the
    tools; enough free disk."
  - "The recoverable window is read from the WAL itself with C(pg_waldump). It starts at the backup's consistency point
    (its stop LSN); for time targets at the commit time of the last transaction before that point (every moment between
    that commit and the end of the backup is the same database state). It ends with the contiguous run of archived
    segments: a time target must lie before the newest commit in that run, because PostgreSQL stops a time target at the
    first transaction that committed after it; an LSN target must not be past the last complete record. Transaction and
    restore point targets are looked up in the archived WAL."
  - "Then: stops the server if it runs (C(pg_ctl stop -m fast)), moves the current data directory aside to
    O(forensic_dir)/<name>-<UTC timestamp> (never deleted), extracts the backup into O(data_dir) (mode 0700, owned by
    O(os_user)), writes C(recovery.signal) and the recovery settings into C(postgresql.auto.conf), starts the server and
    waits until recovery reaches the target: promoted, paused, or shut down per O(target_action)."
  - The restored server runs with C(archive_mode=off) by default (O(restored_archiving=off)), so WAL of the recovered
    history never mixes into the archive before an operator has looked at it. Re-enable archiving and take a new base
    backup afterwards.
  - After promotion the recovery settings are removed again with C(ALTER SYSTEM RESET).
  - If a step after preflight fails, the forensic copy stays where it was moved and the failure lists where everything
    is (O(data_dir), forensic copy, server log, steps done).
  - Commands run as O(os_user) through C(runuser) when the module runs as root; PostgreSQL refuses to run as root.
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
  - replyx.rollback.recovery
attributes:
  check_mode:
    support: full
    description: Runs the whole preflight and returns the plan (steps, chosen base backup, window, settings); changes nothing.
  diff_mode:
    support: none
    description: Reports no diff.
options:
  data_dir:
    description:
      - The server's data directory. Its current content is moved aside to O(forensic_dir), never deleted.
    type: path
    required: true
  forensic_dir:
    description:
      - Where the current data directory is moved, as C(<data_dir name>-<UTC timestamp>).
      - Defaults to the parent directory of O(data_dir) (same filesystem, so the move is a rename).
    type: path
  target_time:
    description:
      - Recover up to this time. It must carry a time zone, as C(select now()) prints it (C(2026-01-31 03:12:45.123+00)).
      - Exactly one of O(target_time), O(target_lsn), O(target_xid), O(target_name), O(target_immediate).
    type: str
notes:
  - The connection options (O(login_host), O(login_port), O(login_password), ...) are those of the restored server, used
    to watch recovery. The passwords are those that were valid at the target.
  - Tablespaces and compressed WAL archives are not supported; the preflight refuses them.
  - WAL not yet archived when the target is chosen is not in the window; run C(SELECT pg_switch_wal()) on the old server
    first. The forensic copy keeps the old C(pg_wal) too.
seealso:
  - module: replyx.rollback.pg_backup
  - name: PostgreSQL continuous archiving and PITR
    description: Recovering using a continuous archive backup.
    link: https://www.postgresql.org/docs/current/continuous-archiving.html#BACKUP-PITR-RECOVERY
"""

EXAMPLES = r"""
- name: Recover the database to the moment before the bad migration
  replyx.rollback.pg_pitr_restore:
    backup_dir: /srv/backups/postgres
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
    forensic_dir: /srv/forensic
    target_time: "2026-01-31 03:12:45.123+00"
    confirm: true
    login_password: "{{ vault_pg_password }}"
  register: pitr

- name: Recover to a restore point and pause there to look at the data first
  replyx.rollback.pg_pitr_restore:
    base_backup: /srv/backups/postgres/base-20260131T020000Z.manifest.json
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
    target_name: before_release_42
    target_action: pause
    pg_bin_dir: /usr/lib/postgresql/18/bin
    confirm: true

- name: Show the plan and the recoverable window only
  replyx.rollback.pg_pitr_restore:
    backup_dir: /srv/backups/postgres
    wal_archive: /srv/wal_archive
    data_dir: /var/lib/postgresql/18/main
    target_lsn: 0/3000148
  check_mode: true
"""

RETURN = r"""
base_backup:
  description: The base backup used, with what was read from it.
  returned: always
  type: dict
  sample:
    manifest_path: /srv/backups/base-1.manifest.json
    path: /srv/backups/base-1
    layout: tar
    start_lsn: 0/2000028
    stop_lsn: 0/2000120
    stop_time: "2026-01-31 02:00:01.000000+00"
    timeline: 1
    size: 31457280
    verified: true
window:
  description:
    - The recoverable window of the chosen backup. C(start_time) is the commit time of the last transaction
      before the backup's consistency point (C(start_time_source) says how it was found); C(end_time) is
      the newest commit in the contiguous archived WAL (targets must be before it).
  returned: always
  type: dict
  sample:
    start_lsn: 0/2000120
    start_time: "2026-01-31 02:00:00.912345+00"
    start_time_source: last transaction before the backup's stop LSN (pg_waldump)
    end_lsn: 0/5000060
    end_time: "2026-01-31 03:20:11.004211+00"
    first_segment: "000000010000000000000002"
    last_segment: "000000010000000000000005"
    segment_count: 4
    gap: null
    timelines: [1]
target:
  description: The recovery target and where recovery is expected to stop.
  returned: always
  type: dict
  sample:
    kind: time
    value: time 2026-01-31 03:12:45.123000+00
    stops: before the first transaction committed after 2026-01-31 03:12:45.123000+00
    timeline: 1
settings:
  description: The recovery settings written into C(postgresql.auto.conf) (or that would be, in check mode).
  returned: always
  type: dict
  sample:
    restore_command: cp /srv/wal_archive/%f %p
    recovery_target_time: "2026-01-31 03:12:45.123000+00"
    recovery_target_inclusive: "on"
    recovery_target_action: promote
    recovery_target_timeline: latest
    archive_mode: "off"
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
  sample: ["stopped the server", "moved /var/lib/postgresql/18/main to /srv/forensic/main-20260131T031500Z"]
server_running:
  description: Whether a server was running on O(data_dir) at the start.
  returned: always
  type: bool
  sample: true
forensic_copy:
  description: Where the previous data directory was moved (in check mode, where it would be moved); null if there was none.
  returned: always
  type: str
  sample: /srv/forensic/main-20260131T031500Z
reached:
  description:
    - What recovery reached. C(lsn) and C(timestamp) are the last replayed WAL location and the commit
      time of the last replayed transaction; C(timeline) is the timeline the server is on (after promotion, the
      new one); C(recovery_stop) is the server's own "recovery stopping ..." line.
  returned: changed
  type: dict
  sample:
    promoted: true
    paused: false
    shut_down: false
    timeline: 2
    replay_timeline: 1
    lsn: 0/3006C58
    timestamp: "2026-01-31 03:12:44.901112+00"
    recovery_stop: recovery stopping before commit of transaction 755, time 2026-01-31 03:12:46.470717+00
    redo_done_lsn: 0/3006C58
space:
  description: The free space check.
  returned: always
  type: dict
  sample: {required_bytes: 1111490560, free_bytes: 84825440256, filesystem_of: /var/lib/postgresql, backup_bytes: 31457280}
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
  sample: /var/lib/postgresql/18/main/log/replyx-pitr-20260131T031500Z.log
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
from ansible_collections.replyx.rollback.plugins.module_utils._pitr import recovery_argument_spec, run_pitr_restore


def main():
    module = AnsibleModule(argument_spec=recovery_argument_spec(), supports_check_mode=True)
    require_psycopg(module)
    try:
        result = run_pitr_restore(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=bool(exc.extra.get("steps_done")))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
