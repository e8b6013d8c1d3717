"""Fabric entry point for the plan's quick commands: `fab health`, `fab db-check`, `fab -H deploy@api1 restart`."""
from fabric import task

from replyx_rollback import quick


def _run(c, name, *extra):
    host = getattr(c, "host", None)
    return quick.COMMANDS[name](quick.connection(host), quick.lab_settings(), *extra)


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
