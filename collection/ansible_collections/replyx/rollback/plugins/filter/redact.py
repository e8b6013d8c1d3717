# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redact filter: secrets and URL passwords out of any text before it is stored, shown or sent."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: redact
short_description: Replace secrets and URL passwords in a text
version_added: "1.0.0"
author: ReplyX platform team
description:
  - Replaces every non-empty secret, as is and URL-encoded, longest first (so a secret that contains another
    is replaced whole), and the password of any C(scheme://user:password@) credentials with O(redaction).
  - Used for incident reports, timelines, triage snapshots and notifications.
positional: secrets, redaction
options:
  _input:
    description: The text. Anything else is converted with C(str()).
    type: raw
    required: true
  secrets:
    description: The values to replace. Empty values are ignored.
    type: list
    elements: raw
    default: []
  redaction:
    description: What each secret is replaced with.
    type: str
    default: "[REDACTED]"
"""

EXAMPLES = r"""
- name: Show a message without its secrets
  ansible.builtin.debug:
    msg: "{{ message | replyx.rollback.redact(rollback_secrets) }}"
"""

RETURN = r"""
_value:
  description: The text with every secret and URL password replaced.
  type: str
"""

import re

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2
    from urllib import quote

URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact(text, secrets=None, redaction="[REDACTED]"):
    """``text`` with every secret (as is and URL-encoded, longest first) and every URL password replaced."""
    out = text if isinstance(text, str) else str(text)
    values = sorted({str(s) for s in (secrets or []) if s not in (None, "") and str(s)}, key=lambda s: (-len(s), s))
    for secret in values:
        out = out.replace(secret, redaction)
        encoded = quote(secret, safe="/")
        if encoded != secret:
            out = out.replace(encoded, redaction)
    return URL_CREDENTIALS.sub(lambda m: m.group(1) + ":" + redaction + "@", out)


class FilterModule(object):
    def filters(self):
        return {"redact": redact}
