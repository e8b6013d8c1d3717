#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: app_service
short_description: Start, stop, restart or reload an application service through systemd, PM2 or its pidfile
version_added: 1.0.0
description:
  - Controls the backend or the workers of the ReplyX stack the way the rollback plan's three restart options do -
    C(systemctl restart), C(pm2 reload/restart), or a manual restart - then waits until the service is up
    (process present and, optionally, a port or URL answering) within a timeout.
  - The V(pidfile) manager is the plan's manual option done safely. It never uses C(pkill -f). It signals only the
    PID read from the service's own pidfile, and only after C(/proc/<pid>/cmdline) (and/or C(/proc/<pid>/exe))
    shows that this PID is the expected program. A stale pidfile - no such process, or a PID now used by an
    unrelated program - is detected and reported, and that process is never signalled. Starting replaces a stale
    pidfile; stopping with a stale pidfile has nothing to stop.
  - Reports the manager and the PIDs before and after.
author:
  - ReplyX platform team (@replyx)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Returns the steps and commands it would run; nothing is started, stopped or signalled.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The running state and PIDs before and after.
options:
  name:
    description:
      - The systemd unit, the PM2 app name, or (V(pidfile)) a name for the service used in messages.
    type: str
    required: true
  manager:
    description:
      - How the service is run.
    type: str
    required: true
    choices: [systemd, pm2, pidfile]
  state:
    description:
      - V(started) and V(stopped) change nothing when the service already is in that state.
      - V(restarted) always restarts (and starts a stopped service).
      - V(reloaded) reloads a running service (C(systemctl reload), C(pm2 reload), or O(reload_signal) to the
        verified PID) and starts a stopped one.
    type: str
    default: started
    choices: [started, stopped, restarted, reloaded]
  pm2_bin:
    description:
      - Path of the pm2 executable (V(pm2)). Default is C(pm2) from E(PATH).
    type: path
  pm2_home:
    description:
      - E(PM2_HOME) of the PM2 daemon (V(pm2)). Default is the PM2 default, C(~/.pm2).
    type: path
  script:
    description:
      - Script to register with PM2 as O(name) when PM2 does not know the app yet (V(pm2)).
    type: str
  ecosystem:
    description:
      - PM2 ecosystem file to start the app O(name) from (C(pm2 start FILE --only NAME)) when PM2 does not know
        the app yet (V(pm2)). Wins over O(script).
    type: path
  interpreter:
    description:
      - Interpreter for O(script) (V(pm2)), for example C(python3) or C(node).
    type: str
  args:
    description:
      - Arguments passed to O(script) (V(pm2)).
    type: list
    elements: str
    default: []
  chdir:
    description:
      - Working directory of the process started (V(pm2) C(--cwd), V(pidfile)).
    type: path
  environment:
    description:
      - Extra environment variables for the process started (V(pm2), V(pidfile)). With V(pm2), an app PM2 already
        knows gets them through C(--update-env).
      - Values of variables whose name says they are secret (C(SECRET_KEY), C(DATABASE_URL), anything with password,
        token, secret, key, auth in its name) and passwords inside URLs are masked wherever they appear in the
        result, echoed arguments included; other values (ports, modes) are shown as they are.
    type: dict
    default: {}
  pidfile:
    description:
      - Path of the service's pidfile (V(pidfile), required).
    type: path
  program:
    description:
      - Regular expression that must match C(/proc/<pid>/cmdline) (arguments joined by spaces) for the PID in
        O(pidfile) to be taken as the service (V(pidfile)). O(program) or O(exe) is required.
    type: str
  exe:
    description:
      - Regular expression that must match the path of C(/proc/<pid>/exe) (V(pidfile)).
    type: str
  command:
    description:
      - Command to start the service, as an argument list (no shell) (V(pidfile)). It is started detached in its own
        session, with stdin from C(/dev/null) and output to O(log_file).
    type: list
    elements: str
  log_file:
    description:
      - File the started process's stdout and stderr are appended to (V(pidfile)). Default is C(/dev/null).
    type: path
  write_pidfile:
    description:
      - Write the started process's PID to O(pidfile) (V(pidfile)). Set to V(false) for a program that writes its
        own pidfile; the module then waits for the pidfile to name a verified process.
    type: bool
    default: true
  stop_signal:
    description:
      - Signal that asks the process to stop (V(pidfile)); C(SIGKILL) follows after O(stop_timeout).
    type: str
    default: TERM
  stop_timeout:
    description:
      - Seconds to wait for the process to exit after O(stop_signal) (V(pidfile)).
    type: float
    default: 10.0
  reload_signal:
    description:
      - Signal sent for V(reloaded) (V(pidfile)).
    type: str
    default: HUP
  wait_port:
    description:
      - TCP port that must accept connections after a start (or be closed after a stop).
    type: int
  wait_host:
    description:
      - Host of O(wait_port).
    type: str
    default: 127.0.0.1
  wait_url:
    description:
      - URL that must answer with one of O(wait_status) after a start.
    type: str
  wait_status:
    description:
      - Accepted status codes of O(wait_url).
    type: list
    elements: int
    default: [200]
  wait_timeout:
    description:
      - Seconds to wait for the service to be up (process present, port and URL answering).
    type: float
    default: 30.0
notes:
  - Commands run as argument lists through C(run_command); no shell is involved.
seealso:
  - module: replyx.rollback.service_health
"""

EXAMPLES = r"""
- name: Restart the backend (plan option 1, systemd) and wait for /health
  replyx.rollback.app_service:
    name: chatai-backend
    manager: systemd
    state: restarted
    wait_url: http://127.0.0.1:8000/health

- name: Reload the backend under PM2 (plan option 2)
  replyx.rollback.app_service:
    name: replyx-backend
    manager: pm2
    pm2_home: /srv/backend/.pm2
    state: reloaded
    wait_port: 8000

- name: Restart the bot manager under PM2, registering it when PM2 does not know it
  replyx.rollback.app_service:
    name: chatai-bot-manager
    manager: pm2
    pm2_bin: /usr/local/bin/pm2
    pm2_home: /srv/workers/.pm2
    script: npm
    args: [start]
    chdir: /srv/workers
    state: restarted
    wait_url: http://127.0.0.1:3001/status

- name: Manual restart done safely (plan option 3) - only the verified PID from the pidfile is signalled
  replyx.rollback.app_service:
    name: backend
    manager: pidfile
    pidfile: /srv/backend/run/backend.pid
    program: 'python.*main\.py'
    command: [/srv/backend/venv/bin/python, main.py]
    chdir: /srv/backend
    environment:
      ENV_FILE: /srv/backend/.env
    log_file: /srv/backend/logs/stdout.log
    state: restarted
    wait_port: 8000
    wait_timeout: 60
"""

RETURN = r"""
manager:
  description: The manager used.
  returned: always
  type: str
  sample: pm2
name:
  description: The service name.
  returned: always
  type: str
  sample: replyx-backend
state:
  description: The state asked for.
  returned: always
  type: str
  sample: restarted
old_pids:
  description: PIDs of the service before (for V(pidfile), only a verified PID).
  returned: always
  type: list
  elements: int
  sample: [31337]
new_pids:
  description: PIDs of the service afterwards (in check mode, unchanged).
  returned: always
  type: list
  elements: int
  sample: [31502]
waited_s:
  description: Seconds spent waiting for the service after acting.
  returned: always
  type: float
  sample: 1.42
steps:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["send SIGTERM to PID 31337 (verified backend), SIGKILL after 10.0s", "start python main.py detached, pidfile /srv/backend/run/backend.pid"]
commands:
  description: The commands run (or to be run in check mode), as argument lists.
  returned: always
  type: list
  elements: list
  sample: [["/usr/bin/systemctl", "restart", "chatai-backend"]]
status_before:
  description: The service's state before, in words.
  returned: always
  type: str
  sample: online
status_after:
  description: The service's state afterwards, in words.
  returned: always
  type: str
  sample: online
stale_pidfile:
  description: The stale pidfile found (V(pidfile)); the process it names, if any, was not signalled.
  returned: when the pidfile was stale
  type: dict
  contains:
    path:
      description: The pidfile.
      type: str
      sample: /srv/backend/run/backend.pid
    pid:
      description: The PID it held, if it held one.
      type: int
      sample: 4242
    reason:
      description: Why it is stale.
      type: str
      sample: "PID 4242 belongs to another program: sleep 300"
    cmdline:
      description: Command line of the process with that PID, when one exists.
      type: str
      sample: sleep 300
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._secrets import protect, sensitive_values, url_passwords
from ansible_collections.replyx.rollback.plugins.module_utils._service import REQUIRED_IF, argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), required_if=REQUIRED_IF, supports_check_mode=True)
    protect(module, sensitive_values(module.params.get("environment") or {}) | url_passwords(module.params.get("command"))
            | url_passwords(module.params.get("wait_url")))
    try:
        result = run(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=False, name=module.params["name"], manager=module.params["manager"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
