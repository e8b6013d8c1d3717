"""File logging: one line per record, ``<ISO-8601 UTC with ms>Z <LEVEL> <logger>: <message>``.

Example: ``2026-11-24T05:00:00.123Z ERROR replyx.app: unhandled exception ...``. Tracebacks are folded
onto the same line (`` | `` separated) so log scanners can count ERROR lines by their prefix.
"""
from __future__ import annotations

import logging
import sys
import time

from core import app_config


class OneLineUTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging API
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"

    def format(self, record):
        line = super().format(record)
        return line.replace("\r", "").replace("\n", " | ")


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured = False


def setup_logging() -> logging.Logger:
    """Configure the ``replyx`` logger to append to LOG_FILE (idempotent)."""
    global _configured
    logger = logging.getLogger("replyx")
    if _configured:
        return logger
    logger.setLevel(app_config.LOG_LEVEL)
    logger.propagate = False
    formatter = OneLineUTCFormatter(FORMAT)
    try:
        app_config.LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(app_config.LOG_FILE, encoding="utf-8")
    except OSError as exc:  # unwritable log dir: keep running, log to stderr
        handler = logging.StreamHandler(sys.stderr)
        print(f"cannot open LOG_FILE {app_config.LOG_FILE}: {exc}; logging to stderr", file=sys.stderr)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    _configured = True
    return logger
