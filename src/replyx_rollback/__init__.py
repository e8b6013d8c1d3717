"""replyx.rollback command line: runs the rollback playbooks through ansible-runner."""

__version__ = "1.0.0.dev0"
