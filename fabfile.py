"""Fabric entry point for the plan's quick commands: `fab health`, `fab db-check`, `fab -H deploy@api1 restart`."""
from fabric import task
from invoke.exceptions import Exit

from replyx_rollback import quick


def _run(c, name, *extra):
    """Run one quick command; a failed check fails the task with the command's exit status (fab exits non-zero)."""
    host = getattr(c, "host", None)
    rc = quick.run_on(host, name, quick.lab_settings(), *extra)
    if rc:
        raise Exit(f"{name} failed on {host or 'the lab'} (exit {rc})", code=rc)


@task
def health(c):
    """curl -f /health"""
    _run(c, "health")


@task(name="db-check")
def db_check(c):
    """SELECT 1 with the app's DATABASE_URL"""
    _run(c, "db-check")


@task
def restart(c):
    """Restart backend and bot manager (PM2/systemd)"""
    _run(c, "restart")


@task
def logs(c, lines=50):
    """Tail of the backend log"""
    _run(c, "logs", int(lines))
