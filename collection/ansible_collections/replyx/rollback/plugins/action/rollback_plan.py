# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""replyx.rollback.rollback_plan: the rollback decision policy, on the controller (module_utils/_policy.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.plugins.action import ActionBase

from ansible_collections.replyx.rollback.plugins.module_utils._policy import PolicyError, argument_spec, run_stage


def _default_run_id(level):
    return "%s-%s" % (time.strftime("%Y%m%d-%H%M%S", time.gmtime()), level)


class ActionModule(ActionBase):
    """Checks the request, chooses the level=auto level and computes the plan. Never changes anything."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=argument_spec())
        check_mode = bool(self._play_context.check_mode) or self._task.check_mode is True
        try:
            result.update(run_stage(args, check_mode=check_mode, default_run_id=_default_run_id))
        except PolicyError as exc:
            result.update(failed=True, msg=exc.msg)
        result["changed"] = False
        return result
