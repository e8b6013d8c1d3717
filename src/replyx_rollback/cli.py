"""replyx-rollback: the rollback playbooks as commands, run through ansible-runner.

  replyx-rollback plan high --target widget_version          # check mode: the plan, nothing changes
  replyx-rollback run high --target widget_version --approval lead:team_lead:INC-7 --approval dba:executive:INC-7
  replyx-rollback run medium --component config --approval dev:developer:INC-8
  replyx-rollback triage | validate | preflight | backup | lab-status
"""
from __future__ import annotations

import argparse
import sys

from replyx_rollback import __version__
from replyx_rollback.runner import run_playbook

LEVELS = ("critical", "high", "medium", "low", "auto")
COMPONENTS = ("backend", "workers", "config", "dependencies", "worker_config", "indexes")
PROCEDURES = {"triage": "triage.yml", "validate": "validate.yml", "preflight": "preflight.yml",
              "backup": "backup.yml", "lab-status": "lab_status.yml"}


def _approval(text: str) -> str:
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"approval {text!r} must be name:role[:ticket]")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="replyx-rollback", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("-i", "--inventory", help="inventory (default: inventories/lab)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("run", "execute a rollback"), ("plan", "show the plan of a rollback (check mode)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("level", choices=LEVELS)
        s.add_argument("--target", help="migration target: a named target, a revision id, -1, base")
        s.add_argument("--component", choices=COMPONENTS)
        s.add_argument("--approval", action="append", type=_approval, default=[], metavar="NAME:ROLE[:TICKET]")
        s.add_argument("--stable-release", help="code release to roll back to (default: last known good)")
        s.add_argument("--window", choices=["now"], help="execute a planned (low) rollback now")
    for name in PROCEDURES:
        sub.add_parser(name, help=f"run playbooks/{PROCEDURES[name]}")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    printer = (lambda line: print(line, flush=True))
    if args.command in PROCEDURES:
        playbook, extravars, check = PROCEDURES[args.command], {}, False
    else:
        playbook, check = "rollback.yml", args.command == "plan"
        extravars = {"level": args.level}
        for key in ("target", "component", "window"):
            if getattr(args, key):
                extravars[key] = getattr(args, key)
        if args.stable_release:
            extravars["stable_release"] = args.stable_release
        if args.approval:
            extravars["approvals"] = ",".join(args.approval)
    print(f"replyx-rollback: {playbook} {'(check mode) ' if check else ''}{extravars or ''}", flush=True)
    result = run_playbook(playbook, extravars=extravars, inventory=args.inventory, check=check,
                          verbosity=args.verbose, on_progress=printer)
    if result.plan_text:
        print("\n" + "\n".join(result.plan_text))
    print(f"\nresult: {result.status} (rc={result.rc})")
    for failure in result.failed_tasks[-3:]:
        print(f"failed: {failure['task']} on {failure['host']}: {failure['msg']}")
    if result.plan:
        print(f"plan: {result.plan}")
    if result.report:
        print(f"incident report: {result.report}")
    return 0 if result.ok else (result.rc or 1)


if __name__ == "__main__":
    sys.exit(main())
