# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _restore
from ansible_collections.replyx.rollback.plugins.module_utils._backup import parse_toc
from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError, SafetyRefusal
from ansible_collections.replyx.rollback.plugins.module_utils._manifest import write_manifest
from ansible_collections.replyx.rollback.plugins.module_utils._pg import pg_common_argument_spec
from ansible_collections.replyx.rollback.plugins.module_utils._restore import (
    Restore, psql_file_argv, resolve_tables, restore_argument_spec, restore_argv, schema_blocks, select_entries)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures_backup")


def read(name):
    with open(os.path.join(FIXTURES, name)) as fh:
        return fh.read()


ENTRIES = parse_toc(read("chatai.toc"))
BLOCKS = schema_blocks(read("chatai_schema.sql"))


def tags(lines):
    return [" ".join(line.split(" ")[3:]).strip() for line in lines]


# ----------------------------------------------------------------------------- argv

@pytest.mark.parametrize("kw,expected", [
    (dict(), ["pg_restore", "--dbname=chatai", "--exit-on-error", "--no-password", "/b/x.dump"]),
    (dict(jobs=4, no_owner=True), ["pg_restore", "--dbname=chatai", "--exit-on-error", "--no-password", "--jobs=4",
                                   "--no-owner", "/b/x.dump"]),
    (dict(schema_only=True), ["pg_restore", "--dbname=chatai", "--exit-on-error", "--no-password", "--schema-only",
                              "/b/x.dump"]),
])
def test_restore_argv(kw, expected):
    assert restore_argv("pg_restore", "/b/x.dump", "chatai", **kw) == expected


def test_psql_argv_single_transaction_with_prelude():
    argv = psql_file_argv("psql", "/t/restore.sql", "chatai", single_transaction=True,
                          commands=["SET LOCAL session_replication_role = replica", 'DELETE FROM "public"."users"'])
    assert argv == ["psql", "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1", "--dbname=chatai",
                    "--single-transaction", "--command=SET LOCAL session_replication_role = replica",
                    '--command=DELETE FROM "public"."users"', "--file=/t/restore.sql"]


# ----------------------------------------------------------------------------- table selection

@pytest.mark.parametrize("requested,expected", [
    (["users"], ["public.users"]),
    (["public.dialogs", "dialog_messages"], ["public.dialogs", "public.dialog_messages"]),
])
def test_resolve_tables(requested, expected):
    assert resolve_tables(requested, ENTRIES) == expected


@pytest.mark.parametrize("requested", [["nope"], ["audit.users"]])
def test_resolve_tables_missing(requested):
    with pytest.raises(InputError) as err:
        resolve_tables(requested, ENTRIES)
    assert err.value.msg.startswith("Failed to restore tables: not in the backup: ")


def test_select_data_only_is_just_the_data():
    lines = select_entries(ENTRIES, ["public.users", "public.dialog_messages"], data_only=True)
    assert tags(lines) == ["TABLE DATA public users postgres", "TABLE DATA public dialog_messages postgres"]


def test_select_with_definition_takes_everything_of_the_table_and_references_to_it():
    lines = select_entries(ENTRIES, ["public.dialogs"], data_only=False, blocks=BLOCKS)
    assert tags(lines) == [
        "TABLE public dialogs postgres",
        "SEQUENCE public dialogs_id_seq postgres",
        "SEQUENCE OWNED BY public dialogs_id_seq postgres",
        "DEFAULT public dialogs id postgres",
        "TABLE DATA public dialogs postgres",
        "SEQUENCE SET public dialogs_id_seq postgres",
        "CONSTRAINT public dialogs dialogs_pkey postgres",
        "INDEX public ix_dialogs_started postgres",
        "FK CONSTRAINT public dialog_messages dialog_messages_dialog_id_fkey postgres",
        "FK CONSTRAINT public dialogs dialogs_user_id_fkey postgres",
        "COMMENT public TABLE dialogs postgres",
    ]


def test_schema_blocks_keyed_like_the_toc():
    assert ("INDEX", "public", "ix_dialogs_started") in BLOCKS
    assert "REFERENCES public.dialogs(id)" in BLOCKS[("FK CONSTRAINT", "public",
                                                      "dialog_messages dialog_messages_dialog_id_fkey")]


# ----------------------------------------------------------------------------- order of guards

def params(**kw):
    spec = pg_common_argument_spec()
    spec.update(restore_argument_spec())
    p = dict((k, v.get("default")) for k, v in spec.items())
    p.update(login_password="s3cret-pw")
    p.update(kw)
    return p


class FakeModule(object):
    def __init__(self, check_mode=False, **kw):
        self.params = params(**kw)
        self.check_mode = check_mode
        self.calls = []

    def run_command(self, argv, **kwargs):
        self.calls.append(argv)
        return 0, "", ""

    def get_bin_path(self, name, required=False):
        return "/usr/bin/" + name


@pytest.fixture
def backup(tmp_path):
    path = tmp_path / "chatai-x.dump"
    path.write_bytes(b"PGDMP")
    write_manifest(str(path), dict(name=path.name, path=str(path), kind="logical", format="custom",
                                   database="chatai", sha256=hashlib.sha256(b"PGDMP").hexdigest(),
                                   created="2026-01-01T00:00:00Z", tables={"public.users": 3}))
    return path


@pytest.fixture
def no_db(monkeypatch):
    """Any database connection is a test failure: these guards must fire before one is made."""
    def boom(*args, **kwargs):
        raise AssertionError("connected to the database")
    monkeypatch.setattr(_restore, "connect", boom)


def test_checksum_is_checked_before_anything(backup, no_db):
    backup.write_bytes(b"PGDMP-changed")
    module = FakeModule(backup=str(backup), confirm=True)
    with pytest.raises(SafetyRefusal) as err:
        Restore(module).run()
    assert "checksum mismatch" in err.value.msg and module.calls == []


def test_missing_manifest(tmp_path, no_db):
    with pytest.raises(InputError) as err:
        Restore(FakeModule(backup=str(tmp_path / "gone.dump"), confirm=True)).run()
    assert err.value.msg.startswith("Failed to load backup manifest ")


@pytest.mark.parametrize("kw,needle", [
    (dict(mode="full"), "confirm: true is required for mode=full (it drops and recreates the database)"),
    (dict(mode="tables", tables=["users"]), "confirm: true is required for mode=tables (it replaces the tables' rows)"),
    (dict(mode="schema_only"), "confirm: true is required for mode=schema_only"),
])
def test_confirm_required(backup, no_db, kw, needle):
    module = FakeModule(backup=str(backup), **kw)
    with pytest.raises(SafetyRefusal) as err:
        Restore(module).run()
    assert needle in err.value.msg and err.value.msg.startswith("Failed to restore ")
    assert module.calls == []


@pytest.mark.parametrize("kw,needle", [
    (dict(mode="tables"), "mode=tables needs the tables option"),
    (dict(mode="full", tables=["users"]), "the tables option is for mode=tables"),
    (dict(jobs=0), "jobs must be at least 1"),
])
def test_bad_input(backup, no_db, kw, needle):
    with pytest.raises(InputError) as err:
        Restore(FakeModule(backup=str(backup), confirm=True, **kw)).run()
    assert needle in err.value.msg


def test_physical_backup_is_refused(tmp_path, no_db):
    d = tmp_path / "base-x"
    d.mkdir()
    (d / "base.tar").write_bytes(b"t")
    from ansible_collections.replyx.rollback.plugins.module_utils._manifest import sha256_path
    write_manifest(str(d), dict(name="base-x", path=str(d), kind="physical", format="tar", sha256=sha256_path(str(d))))
    with pytest.raises(InputError) as err:
        Restore(FakeModule(backup=str(d), confirm=True)).run()
    assert "pg_pitr_restore" in err.value.msg


def test_restore_sessions_get_a_large_maintenance_work_mem():
    from ansible_collections.replyx.rollback.plugins.module_utils import _restore
    from ansible_collections.replyx.rollback.plugins.module_utils._errors import InputError as _InputError

    assert _restore.restore_session_options("1GB") == "-c maintenance_work_mem=1GB"
    assert _restore.restore_session_options("512 MB") == "-c maintenance_work_mem=512MB"
    assert _restore.restore_session_options("") is None
    with pytest.raises(_InputError) as err:
        _restore.restore_session_options("lots; DROP")
    assert "not a PostgreSQL memory setting" in str(err.value)
