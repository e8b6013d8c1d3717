# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_status through main() with faked query answers; and the connection error shape."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

import pytest

from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.replyx.rollback.plugins.module_utils import _pgquery
from ansible_collections.replyx.rollback.plugins.module_utils._errors import ConnectionFailure
from ansible_collections.replyx.rollback.plugins.modules import pg_status

T0 = datetime.datetime(2026, 1, 31, 3, 0, tzinfo=datetime.timezone.utc)


def answers(revisions=("a1b2c3d4e5f6",), failed_after=False, used=32, ready=None):
    base = dict(server_version="18.1", server_version_num=180001, version="PostgreSQL 18.1 on x86_64",
                in_recovery=False, database="chatai", database_size=9000000, database_size_pretty="8789 kB",
                max_connections=40, superuser_reserved_connections=3, archive_mode="on", current_lsn="0/3000148",
                checkpoint_timeline=1, has_alembic=revisions is not None, archive_timeout=60,
                wal_segment_size=16 * 1024 * 1024, current_wal="000000010000000000000008")
    conns = dict(used=used, active=3, idle=used - 3, idle_in_transaction=0)
    archiver = dict(archived_count=7, last_archived_wal="000000010000000000000007", last_archived_time=T0,
                    failed_count=1 if failed_after else 0,
                    last_failed_wal="000000010000000000000008" if failed_after else None,
                    last_failed_time=T0 + datetime.timedelta(minutes=1) if failed_after else None, stats_reset=T0)

    def fetch(conn, query, params=None, verb=None, obj=None):
        if "server_version_num" in query:
            return [base]
        if "client backend" in query:
            return [conns]
        if "pg_stat_archiver" in query:
            return [archiver]
        if "alembic_version" in query:
            return [dict(version_num=r) for r in revisions or ()]
        if "pg_ls_archive_statusdir" in query:
            if ready is None:
                raise _pgquery.CommandFailure("permission denied for function pg_ls_archive_statusdir")
            return [dict(ready_count=ready[0], oldest_ready_time=ready[1])]
        raise AssertionError(query)
    return fetch


class Conn(object):
    def close(self):
        pass


def run(monkeypatch, capsys, tmp_path, fetch, check_mode=False, **params):
    (tmp_path / "remote").mkdir(exist_ok=True)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    monkeypatch.setattr(_pgquery, "connect", lambda settings, **kw: Conn())
    monkeypatch.setattr(_pgquery, "fetch", fetch)
    args = dict(login_db="chatai", login_password="pw-status-secret", _ansible_check_mode=check_mode,
                _ansible_remote_tmp=str(tmp_path / "remote"), _ansible_keep_remote_files=False)
    args.update(params)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            pg_status.main()
    result = json.loads(capsys.readouterr().out)
    result["_rc"] = exit_info.value.code
    return result


def test_status(monkeypatch, capsys, tmp_path):
    result = run(monkeypatch, capsys, tmp_path, answers())
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["server_version"] == "18.1" and result["in_recovery"] is False
    assert result["connections"]["percent"] == 80.0 and result["connections"]["used"] == 32
    assert result["database"] == {"name": "chatai", "size_bytes": 9000000, "size_pretty": "8789 kB"}
    assert result["alembic_revision"] == "a1b2c3d4e5f6"
    assert result["wal_archiving"]["enabled"] is True and result["wal_archiving"]["failing"] is False
    assert result["wal_archiving"]["last_archived_time"] == "2026-01-31T03:00:00+00:00"
    assert result["current_lsn"] == "0/3000148" and result["timeline"] == 1
    arch = result["wal_archiving"]
    assert arch["ok"] is True and arch["problems"] == [] and arch["max_age_s"] == 180
    assert arch["ready_count"] is None and arch["current_wal"] == "000000010000000000000008" and "chain" not in arch


def test_archiving_problems_are_named(monkeypatch, capsys, tmp_path):
    waiting = (4, T0 - datetime.timedelta(hours=1))
    result = run(monkeypatch, capsys, tmp_path, answers(failed_after=True, ready=waiting), archive_max_age_s=600)
    arch = result["wal_archiving"]
    assert result["_rc"] == 0 and arch["ok"] is False and arch["max_age_s"] == 600 and arch["ready_count"] == 4
    assert "archive_command failed on 000000010000000000000008" in arch["problems"][0]
    assert "4 WAL segment(s) wait to be archived" in arch["problems"][1]


def test_archiving_with_the_wal_chain(monkeypatch, capsys, tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "basebackups").mkdir()
    result = run(monkeypatch, capsys, tmp_path, answers(ready=(0, None)), wal_archive=str(tmp_path / "archive"),
                 basebackup_dir=str(tmp_path / "basebackups"))
    arch = result["wal_archiving"]
    assert arch["ok"] is True and arch["chain"]["complete"] is None and arch["problems"] == []
    result = run(monkeypatch, capsys, tmp_path, answers(ready=(0, None)), wal_archive=str(tmp_path / "gone"),
                 basebackup_dir=str(tmp_path / "basebackups"))
    arch = result["wal_archiving"]
    assert arch["ok"] is False and arch["chain"]["complete"] is False
    assert "cannot be checked" in arch["problems"][0] and "gone is not a directory" in arch["problems"][0]
    result = run(monkeypatch, capsys, tmp_path, answers(), wal_archive=str(tmp_path / "archive"))
    assert result["_rc"] == 1 and "basebackup_dir" in result["msg"]


def test_status_heads_no_alembic_and_failing_archiver(monkeypatch, capsys, tmp_path):
    result = run(monkeypatch, capsys, tmp_path, answers(revisions=("b", "a"), failed_after=True), check_mode=True)
    assert result["alembic_revision"] == ["b", "a"] and result["wal_archiving"]["failing"] is True
    result = run(monkeypatch, capsys, tmp_path, answers(revisions=None))
    assert result["alembic_revision"] is None and result["changed"] is False


def test_connection_failure_message(monkeypatch, capsys, tmp_path):
    def refuse(settings, **kw):
        raise ConnectionFailure(_pgquery.connection_reason(Exception(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
            'authentication failed for user "postgres"')), verb="connect to", obj=_pgquery.describe(settings))
    (tmp_path / "remote").mkdir(exist_ok=True)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    monkeypatch.setattr(_pgquery, "connect", refuse)
    args = dict(login_db="chatai", login_password="pw-status-secret", _ansible_remote_tmp=str(tmp_path / "remote"))
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pg_status.main()
    result = json.loads(capsys.readouterr().out)
    assert result["msg"] == ('Failed to connect to PostgreSQL at 127.0.0.1:5432/chatai: password authentication '
                             'failed for user "postgres"')


def test_connection_reason():
    assert _pgquery.connection_reason(Exception("plain text  error")) == "plain text error"
    assert _pgquery.describe(dict(login_host="h", login_port=1, login_db="d", login_password="x")) == \
        "PostgreSQL at h:1/d"
