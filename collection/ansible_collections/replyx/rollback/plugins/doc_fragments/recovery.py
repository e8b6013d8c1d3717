# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The options shared by the modules that restore a base backup and replay WAL
    # (pg_pitr_restore, pg_physical_restore); module_utils/_pitr.py recovery_argument_spec().
    DOCUMENTATION = r"""
options:
  base_backup:
    description:
      - The base backup to restore, as its manifest (C(<backup>.manifest.json)) or the backup path beside it.
      - When unset, the newest verified physical backup in O(backup_dir) whose end precedes the target is used.
    type: path
  backup_dir:
    description:
      - Directory of backups and their manifests, searched when O(base_backup) is unset.
    type: path
  wal_archive:
    description:
      - Directory of archived WAL segment files (uncompressed, as an C(archive_command) of C(cp) writes them).
      - The restored server reads it through C(restore_command); O(os_user) must be able to read it.
    type: path
    required: true
  data_dir:
    description:
      - The server's data directory. What happens to its current content is said under O(forensic_dir).
    type: path
    required: true
  forensic_dir:
    description:
      - Where the forensic copy of the current data directory goes, as C(<data_dir name>-<UTC timestamp>).
      - Defaults to the parent directory of O(data_dir).
    type: path
  target_time:
    description:
      - Recover up to this time. It must carry a time zone, as C(select now()) prints it (C(2026-01-31 03:12:45.123+00)).
      - O(target_time), O(target_lsn), O(target_xid), O(target_name) and O(target_immediate) exclude each other.
    type: str
  target_lsn:
    description:
      - Recover up to this WAL location (C(0/3000148)).
    type: str
  target_xid:
    description:
      - Recover up to the commit of this transaction id.
    type: str
  target_name:
    description:
      - Recover up to this restore point (created with C(pg_create_restore_point())).
    type: str
  target_immediate:
    description:
      - Recover only until the base backup is consistent.
    type: bool
    default: false
  target_inclusive:
    description:
      - Stop just after (V(true)) or just before (V(false)) the target. Applies to time, LSN and transaction targets.
    type: bool
    default: true
  target_action:
    description:
      - What the server does at the target. V(promote) ends recovery and opens the database for writes (a new timeline);
        V(pause) keeps it read-only at the target so the data can be checked first (promote with
        C(SELECT pg_wal_replay_resume())); V(shutdown) stops the server at the target.
    type: str
    default: promote
    choices: [promote, pause, shutdown]
  target_timeline:
    description:
      - Timeline to recover along. V(latest) follows the newest timeline with a history file in the archive, V(current)
        stays on the backup's timeline; or a timeline number.
    type: str
    default: latest
  restored_archiving:
    description:
      - V(off) writes C(archive_mode = off) for the restored server, so the recovered history is not archived until an
        operator turns archiving back on (and takes a new base backup).
      - V(keep) leaves the backup's archive settings; after promotion the new timeline is archived beside the old one
        under its own timeline id and C(.history) file.
    type: str
    default: 'off'
    choices: ['off', keep]
  os_user:
    description:
      - The unprivileged operating system user that runs PostgreSQL and owns O(data_dir).
    type: str
    default: postgres
  server_port:
    description:
      - Port the restored server listens on (written into C(postgresql.auto.conf)); also used to connect to it.
      - When unset, the backup's own setting is kept and O(login_port) is used to connect.
    type: int
  listen_addresses:
    description:
      - C(listen_addresses) of the restored server; when unset, the backup's own setting is kept.
    type: str
  server_log:
    description:
      - Log file of the recovering server. Defaults to C(<data_dir>/log/replyx-pitr-<UTC timestamp>.log).
    type: path
  min_free_bytes:
    description:
      - Free bytes to keep on the filesystem of O(data_dir) beyond the restored size.
    type: int
    default: 1073741824
  free_space_factor:
    description:
      - The restored size (from the backup's own C(backup_manifest)) is multiplied by this for the free space check.
    type: float
    default: 1.2
  timeout:
    description:
      - Seconds to wait for the old server to stop and for recovery to reach the target.
    type: int
    default: 3600
  confirm:
    description:
      - Must be V(true) to replace the data directory. Not needed in check mode.
    type: bool
    default: false
"""
