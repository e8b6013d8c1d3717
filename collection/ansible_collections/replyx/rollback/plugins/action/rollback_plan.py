# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""replyx.rollback.rollback_plan: the rollback decision policy, on the controller (module_utils/_policy.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.plugins.action import ActionBase
from ansible.utils.vars import load_extra_vars

from ansible_collections.replyx.rollback.plugins.module_utils._policy import PolicyError, argument_spec, run_stage
from ansible_collections.replyx.rollback.plugins.module_utils._signatures import approvals_from_signatures

# Who may approve is inventory data: given as extra vars, the person asking for the rollback would choose it.
TRUST_VARIABLES = ("rollback_allow_unsigned_approvals", "rollback_allowed_signers", "rollback_signer_roles",
                   "awx_approvals_users")
TYPED_APPROVALS = ("approvals", "approved_by", "approver_role")


def _default_run_id(level):
    return "%s-%s" % (time.strftime("%Y%m%d-%H%M%S", time.gmtime()), level)


class ActionModule(ActionBase):
    """Checks the request, chooses the level=auto level and computes the plan. Never changes anything."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def _trust_from_extra_vars(self, from_controller):
        try:
            extra = load_extra_vars(self._loader) or {}
        except Exception:  # pylint: disable=broad-except
            # no command line (the action run outside ansible-playbook): nothing typed to refuse
            return []
        # approvals said to come from the AWX workflow must not be typed ones overriding what was read back
        names = TRUST_VARIABLES + (TYPED_APPROVALS if from_controller else ())
        return [name for name in names if name in extra]

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=argument_spec())
        check_mode = bool(self._play_context.check_mode) or self._task.check_mode is True
        typed = self._trust_from_extra_vars(bool((args.get("approval") or {}).get("from_controller")))
        if typed:
            if set(typed) & set(TYPED_APPROVALS):
                why = ("the approvals of this run are the AWX workflow's, read back from its approval nodes; typed "
                       "ones would override them")
            else:
                why = ("who may approve is inventory data (group_vars of the inventory, reviewed like code), never a "
                       "value of the command that asks for the rollback")
            result.update(failed=True, changed=False, msg="Failed to start the rollback: %s given as extra vars; %s. "
                          "Remove -e %s." % (", ".join(typed), why, " -e ".join(typed)))
            return result
        try:
            result.update(run_stage(args, check_mode=check_mode, default_run_id=_default_run_id,
                                    verify_signatures=approvals_from_signatures))
        except PolicyError as exc:
            result.update(failed=True, msg=exc.msg)
        result["changed"] = False
        return result
