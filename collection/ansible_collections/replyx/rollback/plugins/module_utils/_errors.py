# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors for the replyx.rollback modules, turned into fail_json in one place."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ReplyxError(Exception):
    """A failure with the context an operator needs: what failed and the command's output.

    ``verb`` and ``obj`` give the message its house shape: "Failed to <verb> <object>: <reason>".
    """

    def __init__(self, reason, verb=None, obj=None, cmd=None, rc=None, stdout=None, stderr=None, **extra):
        super(ReplyxError, self).__init__(reason)
        self.reason = reason
        self.verb = verb
        self.obj = obj
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.extra = extra

    @property
    def msg(self):
        if self.verb and self.obj:
            return "Failed to %s %s: %s" % (self.verb, self.obj, self.reason)
        return self.reason


class InputError(ReplyxError):
    """Bad input: raised before anything changes."""


class ConnectionFailure(ReplyxError):
    """The server could not be reached or refused the login."""


class CommandFailure(ReplyxError):
    """An external tool failed (non-zero exit, or errors on stderr)."""


class SafetyRefusal(ReplyxError):
    """A guard refused to go on (missing confirm, unverified backup, window, lock held)."""


def fail_from(module, exc, **result):
    """The one place a ReplyxError becomes fail_json. Output is masked by no_log values already."""
    details = dict(result)
    for key in ("cmd", "rc", "stdout", "stderr"):
        value = getattr(exc, key)
        if value is not None:
            details[key] = value
    details.update(exc.extra)
    module.fail_json(msg=exc.msg, **details)
