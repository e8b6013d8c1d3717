#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_restore
short_description: Restore a verified pg_backup backup - the whole database, selected tables, or the schema
version_added: 1.0.0
description:
  - Restores a logical backup taken by M(replyx.rollback.pg_backup), described by its JSON manifest.
  - Before anything else the backup's sha256 is checked against the manifest; a mismatch refuses the restore.
  - Then, unless O(forensic_backup=false), a forensic backup of the current database is taken with
    M(replyx.rollback.pg_backup) into O(forensic_dest), so the restore itself can be undone.
  - O(mode=full) - stops new connections, terminates the other sessions, drops and recreates the database (same
    owner, encoding and locale, or O(owner)), creates every extension the backup needs (for example C(vector)),
    restores with C(pg_restore --exit-on-error) (parallel O(jobs)) or, for plain SQL backups, C(psql -v ON_ERROR_STOP=1).
  - O(mode=tables) - restores only O(tables), in one transaction. With O(data_only=true) their rows are deleted (with
    foreign-key triggers off for that transaction only, so nothing cascades) and reloaded from the backup. With
    O(data_only=false) the tables are dropped and recreated from the backup with their data, sequences, defaults,
    constraints, indexes, triggers and the foreign keys of other tables that reference them. If anything fails the
    transaction rolls back and the tables are as before.
  - O(mode=schema_only) - like O(mode=full) but restores only the schema (an empty database of the backup's shape).
  - After the restore the row count of every restored table is compared with the manifest's counts.
author:
  - ReplyX platform team (@replyx)
extends_documentation_fragment:
  - replyx.rollback.postgres
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Verifies the checksum, checks the database exists and reads the backup's table of contents, then returns the
        plan (RV(steps), RV(commands), RV(queries)) and changes nothing. O(confirm) is not needed in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  backup:
    description:
      - Path of the backup's manifest (C(<name>.manifest.json)) or of the backup itself.
    type: path
    required: true
  mode:
    description:
      - What to restore - the whole database, only O(tables), or only the schema.
    type: str
    default: full
    choices: [full, tables, schema_only]
  target_database:
    description:
      - Database to restore into. It must exist. Defaults to the database named in the manifest.
      - O(login_db) is only used for the administrative connection (C(postgres) when it names the target).
    type: str
  confirm:
    description:
      - Must be V(true) to run; every mode replaces data. Not needed in check mode.
    type: bool
    default: false
  tables:
    description:
      - Tables to restore for O(mode=tables), as C(name) or C(schema.name).
    type: list
    elements: str
    default: []
  data_only:
    description:
      - For O(mode=tables) - V(true) replaces only the rows; V(false) drops and recreates the tables from the backup.
    type: bool
    default: true
  jobs:
    description:
      - Parallel restore jobs for O(mode=full) and O(mode=schema_only) with custom or directory backups.
    type: int
    default: 1
  no_owner:
    description:
      - Do not restore object ownership (C(pg_restore --no-owner)); objects then belong to O(login_user).
    type: bool
    default: false
  owner:
    description:
      - Owner of the recreated database. Defaults to the owner of the database being replaced.
    type: str
  forensic_backup:
    description:
      - Take a forensic backup (custom format, uncompressed for speed) of the current database before changing anything.
    type: bool
    default: true
  forensic_dest:
    description:
      - Directory of the forensic backup. Defaults to the directory of O(backup).
    type: path
  verify_row_counts:
    description:
      - Fail when a restored table's row count differs from the manifest's (only for manifests with exact counts).
    type: bool
    default: true
  maintenance_work_mem:
    description:
      - C(maintenance_work_mem) of the restore sessions (through E(PGOPTIONS)); index builds, above all pgvector's
        hnsw index, dominate a restore and run several times faster with more memory (measured on the lab database,
        a 106 s hnsw build took 28 s with 1GB instead of the server default 64MB). Each parallel job may use this much.
      - Empty to keep the server's setting.
    type: str
    default: 1GB
    version_added: 1.0.0
notes:
  - Data-only table restores use C(SET LOCAL session_replication_role = replica), which needs a superuser
    (or, from PostgreSQL 15, a role granted C(SET) on that parameter).
  - Views that depend on a table block its O(data_only=false) restore (nothing is dropped with C(CASCADE)).
requirements:
  - psycopg >= 3.1 on the managed host
  - PostgreSQL client tools (pg_restore, psql) at least as new as the ones that took the backup
seealso:
  - module: replyx.rollback.pg_backup
  - module: replyx.rollback.pg_pitr_restore
"""

EXAMPLES = r"""
- name: Restore chatai from the pre-rollback backup (full, parallel)
  replyx.rollback.pg_restore:
    database_url: "{{ replyx_database_url }}"
    backup: /var/backups/replyx/chatai-pre-rollback.dir.manifest.json
    mode: full
    jobs: 4
    confirm: true
    forensic_dest: /var/backups/replyx/forensic
  register: restore

- name: Put back the rows of the users table only
  replyx.rollback.pg_restore:
    login_db: chatai
    login_password: "{{ pg_password }}"
    backup: /var/backups/replyx/chatai-pre-rollback.dump
    mode: tables
    tables: [public.users]
    confirm: true

- name: Plan a full restore without changing anything
  replyx.rollback.pg_restore:
    login_password: "{{ pg_password }}"
    backup: /var/backups/replyx/chatai-pre-rollback.dump
  check_mode: true
  register: plan
"""

RETURN = r"""
mode:
  description: The restore mode.
  returned: always
  type: str
  sample: full
database:
  description: The database restored into.
  returned: always
  type: str
  sample: chatai
backup:
  description: The verified manifest of the restored backup (see M(replyx.rollback.pg_backup)), with C(verified=true).
  returned: always
  type: dict
  sample: {"name": "chatai-pre-rollback.dump", "sha256": "9f86d0...", "verified": true, "database": "chatai"}
forensic_backup:
  description:
    - Manifest of the forensic backup taken before the restore (check mode - its planned name and path);
      null with O(forensic_backup=false).
  returned: always
  type: dict
  sample: {"name": "chatai-forensic-20260131T031000Z.dump", "path": "/var/backups/replyx/chatai-forensic-20260131T031000Z.dump",
           "sha256": "2c26b4...", "verified": true}
tables:
  description: Row count of each restored table after the restore (empty in check mode and for schema_only).
  returned: always
  type: dict
  sample: {"public.users": 300, "public.dialogs": 1500}
extensions:
  description: Extensions the backup needs, created before a full restore.
  returned: always
  type: list
  elements: str
  sample: [vector]
commands:
  description: Commands run (check mode - that would run) as argument lists; never with the password.
  returned: always
  type: list
  elements: list
  sample: [["/usr/bin/pg_restore", "--dbname=chatai", "--exit-on-error", "--no-password", "--jobs=4",
            "/var/backups/replyx/chatai-pre-rollback.dir"]]
queries:
  description: SQL statements run (check mode - that would run).
  returned: always
  type: list
  elements: str
  sample: ["ALTER DATABASE \"chatai\" WITH ALLOW_CONNECTIONS false", "DROP DATABASE \"chatai\" WITH (FORCE)"]
steps:
  description: What was done (check mode - the plan), in order.
  returned: always
  type: list
  elements: str
  sample: ["verified backup /var/backups/replyx/chatai-pre-rollback.dump (sha256 9f86d0...)",
           "took forensic backup of chatai to /var/backups/replyx/chatai-forensic-20260131T031000Z.dump"]
msg:
  description: What happened.
  returned: always
  type: str
  sample: restored database chatai from /var/backups/replyx/chatai-pre-rollback.dump
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._pg import pg_common_argument_spec
from ansible_collections.replyx.rollback.plugins.module_utils._restore import restore_argument_spec, run_restore


def main():
    argument_spec = pg_common_argument_spec()
    argument_spec.update(restore_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        module.exit_json(**run_restore(module))
    except ReplyxError as exc:
        fail_from(module, exc, changed=False)


if __name__ == "__main__":
    main()
