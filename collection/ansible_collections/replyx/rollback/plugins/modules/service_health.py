#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: service_health
short_description: Validate that the ReplyX stack is healthy after a rollback
version_added: 1.0.0
description:
  - Runs a list of typed checks (HTTP endpoints with latency samples, a login flow, PostgreSQL connectivity and
    connection saturation, process counts, log errors in the last minutes, disk and memory usage) against
    thresholds and returns a checklist and a summary.
  - The default thresholds are the rollback plan's C(ROLLBACK_MONITORING) - p95 at most 2000 ms, error rate at
    most 1%, database connections at most 80% of C(max_connections), at least 95% of the expected workers,
    disk and memory usage at most 80%. Limits are inclusive - a C(max_*) may be reached but not exceeded.
  - A O(baseline) of p95 latencies recorded earlier judges degradation as a ratio - the plan's C(>300% baseline).
  - With O(retries) or O(deadline_s) the whole set is repeated until it is healthy.
  - Fails when any required check fails; the message names the failing checks and the thresholds crossed.
  - Reads only; never reports a change. Passwords, tokens and request headers are never returned.
author:
  - ReplyX platform team (@replyx)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: The checks only read, so they run in check mode exactly as in a normal run.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
requirements:
  - psycopg >= 3.1 on the managed host, for C(postgres) checks.
  - pm2 on the managed host, for C(process) checks on a PM2 app.
options:
  checks:
    description:
      - The checks, run in order. A C(login) check must come before the C(http) checks that use its token.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Unique name of the check; used in the checklist, the summary and O(baseline).
        type: str
        required: true
      type:
        description:
          - What the check verifies.
          - V(http) - requests O(checks[].url) O(checks[].samples) times and judges status, content, p95 latency and
            error rate.
          - V(login) - posts credentials and keeps the returned token for later V(http) checks with
            O(checks[].use_token).
          - V(postgres) - connects, runs C(SELECT 1), reads the server version, compares active client connections
            with C(max_connections), counts the rows of O(checks[].tables).
          - V(process) - counts processes whose command line matches O(checks[].pattern), or the online instances of
            the PM2 app O(checks[].pm2_app).
          - V(log) - counts lines matching O(checks[].patterns) in the last O(checks[].minutes) of O(checks[].path).
          - V(disk) - used space of the file system holding O(checks[].path).
          - V(memory) - memory in use, from C(MemTotal) and C(MemAvailable) in C(/proc/meminfo).
        type: str
        required: true
        choices: [http, login, postgres, process, log, disk, memory]
      required:
        description:
          - Whether a failure of this check fails the module. A check with V(false) is reported but only informs.
        type: bool
        default: true
      url:
        description:
          - URL to request (V(http), V(login)).
        type: str
      method:
        description:
          - HTTP method. Defaults to V(GET) for V(http) and V(POST) for V(login).
        type: str
      headers:
        description:
          - Request headers (V(http), V(login)). The values of headers whose name says they are secret
            (C(Authorization), C(Cookie), C(X-Api-Key), anything with token, secret, key, auth, session in its name)
            and passwords inside URLs are masked wherever they appear in the result, echoed arguments included.
        type: dict
      authorization:
        description:
          - Value of the C(Authorization) header (V(http)), for example C(Bearer <static token>). Treated as a secret,
            never returned.
        type: str
      body:
        description:
          - Raw request body (V(http)). Mutually exclusive with O(checks[].json).
          - Masked as a whole wherever it appears in the result (a form body carries passwords), unless shorter than
            6 characters.
        type: str
      json:
        description:
          - Request body sent as JSON with C(Content-Type application/json) (V(http)).
          - Values under secret-sounding keys (password, token, secret, key, ...) are masked wherever they appear in
            the result.
        type: raw
      status:
        description:
          - Accepted HTTP status codes (V(http), V(login)); a single code or a list. Defaults to V(200).
        type: list
        elements: int
      json_equals:
        description:
          - Values the JSON response must hold, by dotted path (C(status), C(data.items.0.id)) (V(http)).
        type: dict
      body_regex:
        description:
          - Regular expression the response body must match (V(http)).
        type: str
      samples:
        description:
          - Number of requests to sample (V(http)); latency p50/p95/max and the error rate are computed over them.
        type: int
        default: 1
      concurrency:
        description:
          - Requests in flight at once while sampling (V(http)).
        type: int
        default: 1
      max_p95_ms:
        description:
          - Highest acceptable p95 latency in milliseconds (V(http), V(login)). Default V(2000), the plan's
            C(api_response_time_p95 < 2000ms).
        type: float
      max_error_rate:
        description:
          - Highest acceptable share of failed samples, in percent (V(http)). A sample fails when the URL cannot be
            reached, the status is not accepted or the content checks fail. Default V(1), the plan's C(error_rate < 1%).
        type: float
      timeout:
        description:
          - Seconds to wait for each response (V(http), V(login)). Default V(10).
        type: float
      validate_certs:
        description:
          - Verify TLS certificates (V(http), V(login)).
        type: bool
        default: true
      use_token:
        description:
          - 'Send the token a V(login) check obtained, as C(<token_header>: <token_prefix> <token>) (V(http)).'
        type: bool
        default: false
      token_from:
        description:
          - Name of the V(login) check whose token to send. Default is the last V(login) check that ran.
        type: str
      email:
        description:
          - Login e-mail (V(login)); sent as the C(email) field.
        type: str
      username:
        description:
          - Login user name (V(login)); sent as the C(username) field when O(checks[].email) is not set.
        type: str
      password:
        description:
          - Login password (V(login)). Never returned.
        type: str
      body_format:
        description:
          - How the V(login) credentials are sent - a JSON object or an urlencoded form.
        type: str
        default: json
        choices: [json, form]
      token_path:
        description:
          - Dotted path of the token in the JSON answer of a V(login) check.
        type: str
        default: access_token
      token_header:
        description:
          - Header that carries the token in checks with O(checks[].use_token) (set on the V(login) check).
        type: str
        default: Authorization
      token_prefix:
        description:
          - Scheme put before the token in O(checks[].token_header) (set on the V(login) check). Default V(Bearer);
            an empty string sends the bare token.
        type: str
      max_connections_percent:
        description:
          - Highest acceptable share of C(max_connections) in use by client backends, in percent (V(postgres)).
            Default V(80), the plan's C(database_connections < 80% of max).
        type: float
      tables:
        description:
          - Tables (C(name) or C(schema.name)) that must be readable (V(postgres)); their row counts are returned.
        type: list
        elements: str
      pattern:
        description:
          - Regular expression matched against each process's command line in C(/proc/*/cmdline), arguments joined
            by spaces (V(process)). This module's own process and its ancestors are never counted.
        type: str
      pm2_app:
        description:
          - Name of a PM2 app whose online instances are counted, from C(pm2 jlist) (V(process)).
        type: str
      pm2_bin:
        description:
          - Path of the pm2 executable (V(process)). Default is C(pm2) from E(PATH).
        type: path
      pm2_home:
        description:
          - E(PM2_HOME) of the PM2 daemon to ask (V(process)).
        type: path
      min_count:
        description:
          - Fewest processes acceptable when O(checks[].expected) is not set (V(process)). Default V(1).
        type: int
      min_percent:
        description:
          - Lowest acceptable share of O(checks[].expected), in percent (V(process)). Default V(95), the plan's
            C(bot_workers_active > 95%).
        type: float
      expected:
        description:
          - Number of processes that should run (V(process)); the check then judges O(checks[].min_percent).
        type: int
      path:
        description:
          - Log file to scan (V(log), required), or a path on the file system to measure (V(disk), default V(/)).
        type: path
      patterns:
        description:
          - Regular expressions that mark an error line (V(log)). Default V([ERROR, CRITICAL, Traceback]).
        type: list
        elements: str
      minutes:
        description:
          - Only lines stamped in the last this many minutes are scanned (V(log)), using the ISO-8601 timestamp at the
            start of each line (a timestamp without a zone is local time). Lines without a timestamp belong to the
            line before. V(0) scans the whole file. Default V(10), the plan's C(last 10 minutes).
        type: int
      since:
        description:
          - Only lines stamped at or after this ISO-8601 time are scanned (V(log)), for example the moment a rollback
            restarted the service, so the incident's own errors are not counted. Combined with O(checks[].minutes),
            the later of the two starts the window.
        type: str
        version_added: 1.0.0
      max_matches:
        description:
          - Most error lines acceptable in the window (V(log)). Default V(0).
        type: int
      max_percent:
        description:
          - Highest acceptable usage in percent (V(disk), V(memory)). Default V(80), the plan's C(< 80%).
        type: float
      login_host:
        description:
          - Overrides O(postgres.login_host) for this V(postgres) check.
        type: str
      login_port:
        description:
          - Overrides O(postgres.login_port) for this V(postgres) check.
        type: int
      login_user:
        description:
          - Overrides O(postgres.login_user) for this V(postgres) check.
        type: str
      login_password:
        description:
          - Overrides O(postgres.login_password) for this V(postgres) check. Never returned.
        type: str
      login_db:
        description:
          - Overrides O(postgres.login_db) for this V(postgres) check.
        type: str
      login_unix_socket:
        description:
          - Overrides O(postgres.login_unix_socket) for this V(postgres) check.
        type: str
      database_url:
        description:
          - Overrides O(postgres.database_url) for this V(postgres) check. Treated as a secret.
        type: str
      ssl_mode:
        description:
          - Overrides O(postgres.ssl_mode) for this V(postgres) check.
        type: str
        choices: [allow, disable, prefer, require, verify-ca, verify-full]
      ca_cert:
        description:
          - Overrides O(postgres.ca_cert) for this V(postgres) check.
        type: path
      ssl_cert:
        description:
          - Overrides O(postgres.ssl_cert) for this V(postgres) check.
        type: path
      ssl_key:
        description:
          - Overrides O(postgres.ssl_key) for this V(postgres) check.
        type: path
      connect_timeout:
        description:
          - Overrides O(postgres.connect_timeout) for this V(postgres) check.
        type: int
      pg_bin_dir:
        description:
          - Not used by the checks (they connect with psycopg); accepted so that the shared connection options can be
            passed through unchanged.
        type: path
  postgres:
    description:
      - Connection to PostgreSQL for every V(postgres) check (keys set on a check override these).
      - The same options as the collection's connection options (doc fragment C(replyx.rollback.postgres)).
    type: dict
    suboptions:
      login_host:
        description:
          - Host of the PostgreSQL server.
        type: str
        default: 127.0.0.1
        aliases: [host]
      login_port:
        description:
          - Port of the PostgreSQL server.
        type: int
        default: 5432
        aliases: [port]
      login_user:
        description:
          - Role to connect as.
        type: str
        default: postgres
        aliases: [user]
      login_password:
        description:
          - Password of O(postgres.login_user). Never returned.
        type: str
        aliases: [password]
      login_db:
        description:
          - Database to connect to.
        type: str
        default: postgres
        aliases: [db, database]
      login_unix_socket:
        description:
          - Directory of the server's Unix socket; used instead of O(postgres.login_host) when set.
        type: str
      database_url:
        description:
          - A libpq URL C(postgresql://user:password@host:port/dbname), as in the application's C(.env).
          - Its parts override the separate options. Treated as a secret.
        type: str
      ssl_mode:
        description:
          - libpq SSL mode.
        type: str
        default: prefer
        choices: [allow, disable, prefer, require, verify-ca, verify-full]
      ca_cert:
        description:
          - Root certificate file.
        type: path
        aliases: [ssl_rootcert]
      ssl_cert:
        description:
          - Client certificate file.
        type: path
      ssl_key:
        description:
          - Client key file.
        type: path
      connect_timeout:
        description:
          - Seconds to wait for a connection.
        type: int
        default: 10
      pg_bin_dir:
        description:
          - Not used by this module (it connects with psycopg); accepted so the shared options pass through unchanged.
        type: path
  baseline:
    description:
      - p95 latencies in milliseconds recorded on a healthy system, by check name (for example from an earlier run's
        C(checklist[].samples.p95_ms)).
      - A V(http) or V(login) check whose p95 exceeds O(max_ratio_to_baseline) times its baseline fails, and its
        detail says so.
    type: dict
    default: {}
  max_ratio_to_baseline:
    description:
      - How many times its baseline p95 a check may take. Default V(3.0), the plan's C(>300% baseline).
    type: float
    default: 3.0
  retries:
    description:
      - How many more times to run the whole set of checks while it is not healthy.
    type: int
    default: 0
  delay:
    description:
      - Seconds to wait between attempts.
    type: float
    default: 5.0
  deadline_s:
    description:
      - Keep repeating the whole set until it is healthy or this many seconds have passed since the first attempt
        (together with O(retries), whichever allows more attempts).
    type: float
notes:
  - HTTP requests go through C(ansible.module_utils.urls); no extra Python library is needed for them.
seealso:
  - module: replyx.rollback.app_service
"""

EXAMPLES = r"""
- name: Validate the backend after the rollback (plan's immediate checks)
  replyx.rollback.service_health:
    postgres:
      database_url: "{{ backend_database_url }}"
    checks:
      - name: health
        type: http
        url: http://127.0.0.1:8000/health
        json_equals:
          status: ok
      - name: login
        type: login
        url: http://127.0.0.1:8000/api/login
        email: test@example.com
        password: "{{ validation_password }}"
      - name: dialogs
        type: http
        url: http://127.0.0.1:8000/api/dialogs
        use_token: true
        samples: 20
        concurrency: 4
      - name: database
        type: postgres
        tables: [users, assistants, dialogs]
      - name: bot workers
        type: process
        pm2_app: chatai-bot-manager
        pm2_home: /srv/workers/.pm2
        expected: 1
      - name: backend log
        type: log
        path: /srv/backend/logs/app.log
        minutes: 10
      - name: disk
        type: disk
        path: /srv
      - name: memory
        type: memory
    baseline:
      dialogs: 180
    retries: 5
    delay: 10
  register: validation

- name: Wait up to five minutes for the API to settle, tolerating an optional check
  replyx.rollback.service_health:
    deadline_s: 300
    delay: 15
    checks:
      - name: health
        type: http
        url: http://127.0.0.1:8000/health
      - name: workers status
        type: http
        url: http://127.0.0.1:3001/status
        required: false
"""

RETURN = r"""
checklist:
  description: One entry per check, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the check.
      type: str
      sample: dialogs
    type:
      description: Type of the check.
      type: str
      sample: http
    ok:
      description: Whether the check passed.
      type: bool
      sample: false
    required:
      description: Whether a failure of this check fails the module.
      type: bool
      sample: true
    value:
      description:
        - What was measured - the p95 in ms (V(http)), a dict of status/token_obtained (V(login)), a dict of
          version, connections, max_connections, connections_percent and table counts (V(postgres)), a count
          (V(process), V(log)), a percentage (V(disk), V(memory)).
      type: raw
      sample: 2612.4
    threshold:
      description: The limits the value was judged against.
      type: dict
      sample: {"max_p95_ms": 2000.0, "max_error_rate": 1.0}
    detail:
      description: One sentence on the outcome; for a failure, why.
      type: str
      sample: p95 2612.4 ms > 2000 ms
    crossed:
      description: The thresholds this check crossed, as sentences starting with the check name.
      type: list
      elements: str
      sample: ["dialogs: p95 2612.4 ms > 2000 ms"]
    samples:
      description: Latency statistics (V(http), V(login)) - count, errors, error_rate (percent), statuses, p50_ms,
        p95_ms, max_ms, min_ms, and ratio_to_baseline when a baseline was given.
      type: dict
      returned: for http and login checks
      sample: {"count": 20, "errors": 0, "error_rate": 0.0, "statuses": [200], "p50_ms": 2400.1, "p95_ms": 2612.4,
               "max_ms": 2700.0, "min_ms": 2301.2}
    pids:
      description: PIDs counted by a V(process) check.
      type: list
      elements: int
      returned: for process checks
      sample: [4242, 4243]
    matched_lines:
      description: The last (at most five) matching lines of a V(log) check, each cut at 500 characters.
      type: list
      elements: str
      returned: for log checks
      sample: ["2026-01-05T03:12:44Z ERROR dialogs: column widget_version does not exist"]
    lines_scanned:
      description: Lines inside the time window of a V(log) check.
      type: int
      returned: for log checks
      sample: 1532
summary:
  description: The outcome of the last attempt.
  returned: always
  type: dict
  contains:
    passed:
      description: Checks that passed.
      type: int
      sample: 6
    failed:
      description: Checks that failed, required or not.
      type: int
      sample: 1
    total:
      description: Checks run.
      type: int
      sample: 7
    healthy:
      description: True when no required check failed.
      type: bool
      sample: false
    failed_checks:
      description: Names of the checks that failed.
      type: list
      elements: str
      sample: [dialogs]
    failed_required:
      description: Names of the required checks that failed.
      type: list
      elements: str
      sample: [dialogs]
    crossed:
      description: Every threshold crossed, as sentences.
      type: list
      elements: str
      sample: ["dialogs: p95 2612 ms > 2000 ms"]
attempts:
  description: How many times the set of checks ran.
  returned: always
  type: int
  sample: 1
elapsed_s:
  description: Seconds from the first attempt to the end of the last.
  returned: always
  type: float
  sample: 3.42
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replyx.rollback.plugins.module_utils._errors import ReplyxError, fail_from
from ansible_collections.replyx.rollback.plugins.module_utils._secrets import body_secrets, protect, sensitive_values
from ansible_collections.replyx.rollback.plugins.module_utils._health import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    for check in module.params.get("checks") or []:
        protect(module, sensitive_values(check.get("headers") or {}) | sensitive_values(check.get("json"))
                | body_secrets(check.get("body")))
    try:
        result = run(module)
    except ReplyxError as exc:
        fail_from(module, exc, changed=False)
    if not result["summary"]["healthy"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
