# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redact filter, table-driven: what leaves a report, a timeline or a notification."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.replyx.rollback.plugins.filter.redact import FilterModule, redact

R = "[REDACTED]"

CASES = [
    ("no secrets, no change", "plain text", [], "plain text"),
    ("a secret anywhere", "pw=LabAppPw-7f3a9c21 end", ["LabAppPw-7f3a9c21"], "pw=%s end" % R),
    ("every occurrence", "a S3cret b S3cret", ["S3cret"], "a %s b %s" % (R, R)),
    ("URL-encoded form too", "dsn?password=p%40ss%3Aw0rd", ["p@ss:w0rd"], "dsn?password=%s" % R),
    ("longest first: a secret containing another goes whole", "token=abcdef", ["abc", "abcdef"], "token=%s" % R),
    ("empty and None secrets are ignored", "keep me", ["", None], "keep me"),
    ("non-string secrets are compared as text", "port 55432 pin 1234", [1234], "port 55432 pin %s" % R),
    ("URL password without a known secret", "postgresql://chatai:hunter2@db:5432/x", [], "postgresql://chatai:%s@db:5432/x" % R),
    ("URL without password untouched", "https://hooks.example/abc@x", [], "https://hooks.example/abc@x"),
    ("non-text input is converted", {"k": "S3cret"}, ["S3cret"], "{'k': '%s'}" % R),
    ("non-ASCII text and secret", "пароль: Пароль-ёж", ["Пароль-ёж"], "пароль: %s" % R),
]


@pytest.mark.parametrize("text, secrets, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_redact(text, secrets, expected):
    assert redact(text, secrets) == expected


def test_redaction_marker_and_registration():
    assert redact("x S3cret", ["S3cret"], "***") == "x ***"
    assert FilterModule().filters()["redact"] is redact
