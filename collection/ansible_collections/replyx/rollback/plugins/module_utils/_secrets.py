# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which values of free-form options (headers, request bodies, process environments) are secrets.

Marking a whole dict option ``no_log`` makes Ansible mask every value of it wherever it appears in the
result, so ``{"PORT": "1"}`` turns ``127.0.0.1`` into ``********27.0.0.********``. Instead the modules
register only the values that are secrets - those under a name that says so, and passwords inside
URLs - with ``module.no_log_values``: they are masked everywhere (``invocation.module_args`` included)
and nothing else is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Names whose values are secrets: Authorization, Cookie, X-Api-Key, SECRET_KEY, DATABASE_URL, ...
SENSITIVE_NAME = re.compile(r"pass|secret|token|auth|cookie|session|credential|(^|[-_])key$|api[-_]?key|"
                            r"private|signature|database_url|dsn", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@", re.IGNORECASE)
MIN_BODY = 6  # a raw body shorter than this is masked only through its URL passwords


def _strings(value):
    """Every scalar of a nested value, as text (an explicit stack: no recursion limit, no generators)."""
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool):
            out.append(str(item))
    return out


def url_passwords(value):
    """Passwords of scheme://user:password@ credentials anywhere in the value."""
    found = set()
    for text in _strings(value):
        found.update(m.group(1) for m in URL_PASSWORD.finditer(text))
    return found


def sensitive_values(value, under_secret_name=False):
    """Every string under a secret-sounding key (at any depth), plus URL passwords anywhere."""
    found = set(url_passwords(value))
    if isinstance(value, dict):
        for key, item in value.items():
            secret = under_secret_name or bool(SENSITIVE_NAME.search(str(key)))
            found.update(sensitive_values(item, secret))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.update(sensitive_values(item, under_secret_name))
    elif under_secret_name and value is not None and not isinstance(value, bool) and str(value) != "":
        found.add(str(value))
    return found


def body_secrets(body):
    """A raw request body is treated as one secret (form posts carry passwords), when not trivially short."""
    found = set(url_passwords(body))
    if body is not None and len(str(body)) >= MIN_BODY:
        found.add(str(body))
    return found


def protect(module, values):
    """Mask these values in everything the module returns."""
    for value in values:
        if value:
            module.no_log_values.add(value)
