"""``python -m nexusflow_worker`` is ``nexusflow worker``."""

from .cli import worker

worker(prog_name="nexusflow worker")
