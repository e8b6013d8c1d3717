"""The plan's "Quick Commands" (emergency aliases) as Fabric tasks, safe by construction.

  replyx-quick health                 # curl -f http://localhost:8000/health
  replyx-quick db-check               # psql $DATABASE_URL -c 'SELECT 1;'   (URL read from the app's .env)
  replyx-quick restart                # restart backend and bot manager (PM2 or systemd), never pkill
  replyx-quick logs [-n 50]           # tail of the backend log
  replyx-quick --host deploy@api1 health     # the same on a real host over SSH

Each command runs through a Fabric Connection (SSH) for --host, or locally on the lab. The
DATABASE_URL never appears on a command line or in the output: it is passed in the environment.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml
from invoke import Context

REPO = Path(__file__).resolve().parents[2]


def lab_settings() -> dict:
    """Paths and ports of the embedded lab (inventories/lab), as the roles resolve them."""
    import os  # noqa: PLC0415

    root = Path(os.environ.get("REPLYX_LAB_ROOT") or REPO / ".lab")
    return {
        "backend_url": f"http://127.0.0.1:{os.environ.get('REPLYX_BACKEND_PORT') or 8000}",
        "app_dir": str(root / "backend" / "app"),
        "log_file": str(root / "backend" / "logs" / "backend.log"),
        "pm2": str(REPO / ".tools" / "node_modules" / ".bin" / "pm2"),
        "backend_pm2_home": str(root / "backend" / "pm2"),
        "workers_pm2_home": str(root / "workers" / "pm2"),
        "backend_service": "replyx-backend",
        "workers_service": "chatai-bot-manager",
        "manager": "pm2",
        "psql": str(Path(sys.prefix) / "bin" / "python") + " -m replyx_rollback.quick _psql",
    }


def connection(host: str | None):
    if host:
        from fabric import Connection  # noqa: PLC0415

        return Connection(host, connect_timeout=10)
    return Context()


def health(c, s: dict) -> int:
    r = c.run(f"curl -fsS -m 10 {shlex.quote(s['backend_url'] + '/health')}", warn=True, hide=True)
    print(r.stdout.strip() or r.stderr.strip())
    return r.exited


def db_check(c, s: dict) -> int:
    """SELECT 1 with the app's own DATABASE_URL, read from its .env on the host; the URL stays in the environment."""
    env_file = shlex.quote(s["app_dir"] + "/.env")
    cmd = (f"set -a; . {env_file}; set +a; "
           f"{s['psql']} 'SELECT 1 AS ok, current_database() AS db, version() AS version'")
    r = c.run(f"bash -c {shlex.quote(cmd)}", warn=True, hide=True)
    print(r.stdout.strip() or r.stderr.strip())
    return r.exited


def restart(c, s: dict) -> int:
    rc = 0
    for name, home in ((s["backend_service"], s["backend_pm2_home"]), (s["workers_service"], s["workers_pm2_home"])):
        if s["manager"] == "pm2":
            cmd = f"PM2_HOME={shlex.quote(home)} {shlex.quote(s['pm2'])} restart {shlex.quote(name)} --update-env"
        else:
            cmd = f"systemctl restart {shlex.quote(name)}"
        r = c.run(cmd, warn=True, hide=True)
        print(f"{name}: {'restarted' if r.ok else 'FAILED: ' + (r.stderr.strip() or r.stdout.strip())[-300:]}")
        rc = rc or r.exited
    return rc


def logs(c, s: dict, lines: int = 50) -> int:
    r = c.run(f"tail -n {int(lines)} {shlex.quote(s['log_file'])}", warn=True, hide=True)
    print(r.stdout.rstrip() or r.stderr.strip())
    return r.exited


def _psql(sql: str) -> int:
    """Run one query with psycopg using DATABASE_URL from the environment; print rows as JSON."""
    import os  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    url = os.environ.get("DATABASE_URL")
    if not url:
        print("Failed to check the database: DATABASE_URL is not set in the app's .env", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            cur = conn.execute(sql)
            cols = [d.name for d in cur.description]
            for row in cur.fetchall():
                print(json.dumps(dict(zip(cols, [str(v) for v in row]))))
    except psycopg.Error as exc:
        print(f"Failed to check the database: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"health": health, "db-check": db_check, "restart": restart, "logs": logs}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_psql"]:
        return _psql(argv[1])
    p = argparse.ArgumentParser(prog="replyx-quick", description="The plan's quick commands, done safely")
    p.add_argument("--host", help="user@host to run on over SSH (default: the local lab)")
    p.add_argument("--settings", help="YAML file of settings for a real host (keys as in the lab)")
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("-n", "--lines", type=int, default=50)
    args = p.parse_args(argv)
    settings = lab_settings()
    if args.settings:
        settings.update(yaml.safe_load(Path(args.settings).read_text()) or {})
    c = connection(args.host)
    fn = COMMANDS[args.command]
    return fn(c, settings, args.lines) if fn is logs else fn(c, settings)


if __name__ == "__main__":
    sys.exit(main())
