"""``nexusflow worker``: run worker processes with a reconciler."""

from __future__ import annotations

import logging
import sys

import click

from nexusflow_kernel.settings import Settings

from .supervisor import Supervisor


@click.command("worker")
@click.option("--processes", "-n", default=1, show_default=True, envvar="NEXUSFLOW_WORKERS",
              type=click.IntRange(1, 256), help="Worker processes to run.")
@click.option("--queues", "-q", default="default", show_default=True,
              help="Comma-separated queues: default, sandbox (code nodes).")
@click.option("--fork", is_flag=True, help="Run each node in a forked work-horse.")
@click.option("--no-reconciler", is_flag=True, help="Do not run the reconciler loop here.")
@click.option("--grace", default=60.0, show_default=True,
              help="Seconds the node in hand may take to finish after SIGTERM.")
@click.option("--log-level", default="WARNING", show_default=True, envvar="NEXUSFLOW_LOG_LEVEL")
def worker(processes: int, queues: str, fork: bool, no_reconciler: bool, grace: float,
           log_level: str) -> None:
    """Run N worker processes that execute nodes, with the reconciler."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    sup = Supervisor(Settings.from_env(), processes=processes, queues=names, fork=fork,
                     reconcile=not no_reconciler, grace_s=grace, log_level=log_level)
    sys.exit(sup.run())
