#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_status
short_description: Read-only status of a PostgreSQL server for triage and validation
version_added: 1.0.0
description:
  - Reads, and never changes, what the rollback plan checks by hand - server version, whether the server is in
    recovery, client connections against C(max_connections) (the plan's "< 80% of max"), the database size, the
    Alembic revision when the C(alembic_version) table exists, WAL archiving status from C(pg_stat_archiver), and the
    current WAL location.
  - Judges WAL archiving, which can fail while the server runs happily - C(archive_mode) off, the last archiving
    attempt failed after the last success, finished segments waiting longer than O(archive_max_age_s) - into
    C(wal_archiving.problems), each naming what is wrong. With O(wal_archive) and O(basebackup_dir) it also checks
    that the archive holds the WAL of the newest base backup and an unbroken run after it (C(wal_archiving.chain)).
  - Reports problems, never fails for them; the playbooks decide (preflight, triage, backup.yml).
  - Always returns C(changed=false).
author:
  - ReplyX platform team (@replyx)
options:
  archive_max_age_s:
    description:
      - How long, in seconds, a finished WAL segment may wait for the archiver before it is a problem.
      - Default two C(archive_timeout)s plus a minute (at least 120); 300 when C(archive_timeout) is 0.
    type: int
  wal_archive:
    description:
      - The WAL archive directory on the host the module runs on (where C(archive_command) copies to).
      - With O(basebackup_dir), the WAL chain of the newest base backup is checked.
    type: path
  basebackup_dir:
    description: The directory of the physical backups (replyx manifests), with O(wal_archive).
    type: path
extends_documentation_fragment:
  - replyx.rollback.postgres
attributes:
  check_mode:
    support: full
    description: Runs the same read-only queries.
  diff_mode:
    support: none
    description: Reports no diff.
seealso:
  - module: replyx.rollback.service_health
  - module: community.postgresql.postgresql_info
"""

EXAMPLES = r"""
- name: Triage snapshot of the database
  replyx.rollback.pg_status:
    database_url: "{{ replyx_database_url }}"
  register: pg

- name: Connections below 80% of max_connections
  ansible.builtin.assert:
    that: pg.connections.percent < 80
    fail_msg: "{{ pg.connections.used }} of {{ pg.connections.max_connections }} connections in use"
"""

RETURN = r"""
server_version:
  description: C(server_version) setting.
  returned: always
  type: str
  sample: "18.1"
server_version_num:
  description: C(server_version_num) setting.
  returned: always
  type: int
  sample: 180001
version:
  description: The full C(version()) string.
  returned: always
  type: str
  sample: PostgreSQL 18.1 on x86_64-pc-linux-gnu, compiled by gcc
in_recovery:
  description: C(pg_is_in_recovery()) - a standby, or a server still recovering.
  returned: always
  type: bool
  sample: false
connections:
  description:
    - Client connections (C(pg_stat_activity) rows with C(backend_type = 'client backend')); C(used)
      counts against C(max_connections), C(percent) is C(used) of C(max_connections) in percent.
  returned: always
  type: dict
  sample: {used: 12, active: 3, idle: 9, idle_in_transaction: 0, max_connections: 100,
           superuser_reserved_connections: 3, percent: 12.0}
database:
  description: The database connected to and its size.
  returned: always
  type: dict
  sample: {name: chatai, size_bytes: 9123456, size_pretty: 8910 kB}
alembic_revision:
  description: Revision in C(public.alembic_version); a list when there are several heads; null without the table.
  returned: always
  type: raw
  sample: a1b2c3d4e5f6
wal_archiving:
  description:
    - C(archive_mode) and C(pg_stat_archiver). C(failing) is true when the newest archiving attempt
      failed.
    - C(ready_count) and C(oldest_ready_time) count the finished segments waiting for the archiver (null when the
      login may not read C(pg_ls_archive_statusdir()) - superuser or C(pg_monitor)); C(current_wal) is the segment
      being written.
    - C(ok) is false when C(problems) (texts naming each problem) is not empty; C(warnings) are past failures the
      archiver has recovered from. C(max_age_s) is the threshold used.
    - C(chain) is only returned with O(wal_archive) and O(basebackup_dir) - C(complete) (null without a base
      backup, which is not a WAL problem), C(backup), C(first_segment), C(stop_segment), C(last_segment), C(missing)
      and its C(problems) (also in C(problems)).
  returned: always
  type: dict
  sample: {archive_mode: "on", enabled: true, archived_count: 42, last_archived_wal: "000000010000000000000029",
           last_archived_time: "2026-01-31T03:12:45.123456+00:00", failed_count: 0, last_failed_wal: null,
           last_failed_time: null, stats_reset: "2026-01-30T00:00:00+00:00", failing: false,
           archive_timeout: 60, wal_segment_size: 16777216, current_wal: "00000001000000000000002A",
           in_recovery: false, ready_count: 0, oldest_ready_time: null, max_age_s: 180, ok: true, problems: [],
           warnings: []}
current_lsn:
  description: C(pg_current_wal_lsn()) (in recovery - C(pg_last_wal_replay_lsn())).
  returned: always
  type: str
  sample: 0/3000148
timeline:
  description: Timeline of the latest checkpoint (C(pg_control_checkpoint())).
  returned: always
  type: int
  sample: 1
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._archiving import default_max_age, judge_archiver, wal_chain
from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._pg import connection_settings, pg_common_argument_spec
from ansible_collections.replyx.rollback.plugins.module_utils._pgquery import require_psycopg, server_status


def main():
    spec = pg_common_argument_spec()
    spec.update(archive_max_age_s=dict(type="int"), wal_archive=dict(type="path"), basebackup_dir=dict(type="path"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_together=[("wal_archive", "basebackup_dir")])
    require_psycopg(module)
    try:
        result = server_status(connection_settings(module.params))
    except ReplyxError as exc:
        fail_from(module, exc, changed=False)
    arch = result["wal_archiving"]
    max_age = module.params["archive_max_age_s"]
    arch["max_age_s"] = max_age if max_age is not None else default_max_age(arch.get("archive_timeout"))
    try:
        arch["ok"], arch["problems"], arch["warnings"] = judge_archiver(
            arch, datetime.datetime.now(datetime.timezone.utc), arch["max_age_s"])
    except ReplyxError as exc:
        arch["ok"], arch["problems"], arch["warnings"] = False, ["cannot judge WAL archiving: %s" % exc.msg], []
    if module.params["wal_archive"]:
        arch["chain"] = wal_chain(module.params["basebackup_dir"], module.params["wal_archive"])
        arch["problems"] = arch["problems"] + arch["chain"]["problems"]
        arch["ok"] = not arch["problems"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
