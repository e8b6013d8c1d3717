# -*- coding: utf-8 -*-
"""Which values of headers, bodies and environments are secrets (masked), and which are not."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.replyx.rollback.plugins.module_utils import _secrets as sec


@pytest.mark.parametrize("value, secrets", [
    ({"Authorization": "Bearer abc123", "X-Probe": "rollback"}, {"Bearer abc123"}),
    ({"X-Api-Key": "k-1", "Accept": "application/json"}, {"k-1"}),
    ({"Cookie": "sid=42"}, {"sid=42"}),
    ({"SECRET_KEY": "s3", "DATABASE_URL": "postgresql://app:pw9@db/x", "PORT": "1", "NODE_ENV": "production"},
     {"s3", "postgresql://app:pw9@db/x", "pw9"}),
    ({"REDIS": "redis://:hunter2@cache:6379/0", "LOG_LEVEL": "info"}, {"hunter2"}),
    ({"login": {"email": "a@b.c", "password": "p4ss"}, "count": 1}, {"p4ss"}),
    ({"tokens": ["t1", "t2"], "enabled": True}, {"t1", "t2"}),
    ({"monkey": "banana", "keyboard": "qwerty"}, set()),
    ({"ssh_key": "AAAA", "private_key_path": "/k"}, {"AAAA", "/k"}),
    ({}, set()),
    (None, set()),
])
def test_sensitive_values(value, secrets):
    assert sec.sensitive_values(value) == secrets


@pytest.mark.parametrize("body, secrets", [
    ("token=abc&user=x", {"token=abc&user=x"}),
    ("1", set()),
    (None, set()),
    ("see https://u:pw@h/", {"see https://u:pw@h/", "pw"}),
])
def test_body_secrets(body, secrets):
    assert sec.body_secrets(body) == secrets
