"""``nexusflow worker``: run worker processes with a reconciler; ``nexusflow worker status``."""

from __future__ import annotations

import json
import logging
import sys

import click

from nexusflow_kernel.settings import Settings

from .supervisor import Supervisor


@click.group("worker", invoke_without_command=True)
@click.option("--processes", "-n", default=1, show_default=True, envvar="NEXUSFLOW_WORKERS",
              type=click.IntRange(1, 256), help="Worker processes to run.")
@click.option("--queues", "-q", default="default", show_default=True,
              help="Comma-separated queues: default, sandbox (code nodes).")
@click.option("--fork", is_flag=True, help="Run each node in a forked work-horse.")
@click.option("--no-reconciler", is_flag=True, help="Do not run the reconciler loop here.")
@click.option("--grace", default=60.0, show_default=True,
              help="Seconds the node in hand may take to finish after SIGTERM.")
@click.option("--log-level", default="WARNING", show_default=True, envvar="NEXUSFLOW_LOG_LEVEL")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              envvar="NEXUSFLOW_WORKER_METRICS_PORT",
              help="Serve Prometheus metrics of all N processes on this port (/metrics).")
@click.option("--metrics-ip", default="127.0.0.1", show_default=True,
              envvar="NEXUSFLOW_WORKER_METRICS_IP",
              help="Address of the metrics port (0.0.0.0 for a Prometheus elsewhere).")
@click.pass_context
def worker(ctx: click.Context, processes: int, queues: str, fork: bool, no_reconciler: bool,
           grace: float, log_level: str, metrics_port: int | None, metrics_ip: str) -> None:
    """Run N worker processes that execute nodes, with the reconciler."""
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    sup = Supervisor(Settings.from_env(), processes=processes, queues=names, fork=fork,
                     reconcile=not no_reconciler, grace_s=grace, log_level=log_level,
                     metrics_port=metrics_port, metrics_ip=metrics_ip)
    sys.exit(sup.run())


@worker.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--refusals", default=5, show_default=True, type=click.IntRange(0, 100),
              help="How many of the latest refused jobs to list.")
def status(as_json: bool, refusals: int) -> None:
    """Show the workers registered in Redis and the jobs they refused to run."""
    from rq import Queue
    from rq import Worker as RQWorker
    from rq.serializers import JSONSerializer

    from nexusflow_kernel.services import resolve_backends
    from nexusflow_kernel.transport.broker import get_redis

    from .guard import refusal_report

    settings = resolve_backends(Settings.from_env())
    conn = get_redis(settings.redis_url)  # type: ignore[arg-type]
    queues = {"default": settings.queue_name, "sandbox": settings.sandbox_queue_name}
    workers = []
    for w in RQWorker.all(connection=conn, serializer=JSONSerializer):
        workers.append({"name": w.name, "state": w.get_state(), "queues": w.queue_names(),
                        "pid": w.pid, "host": w.hostname,
                        "current_job": w.get_current_job_id()})
    waiting = {kind: Queue(name, connection=conn, serializer=JSONSerializer).count
               for kind, name in queues.items()}
    report = refusal_report(conn, refusals)
    if as_json:
        click.echo(json.dumps({"workers": workers, "queued": waiting, "refused": report},
                              indent=2, default=str))
        return
    click.echo(f"{len(workers)} worker(s) registered")
    for w in workers:
        job = f", running {w['current_job']}" if w["current_job"] else ""
        click.echo(f"  {w['name']} ({w['state']}) on {', '.join(w['queues'])}{job}")
    click.echo("queued jobs: " + ", ".join(f"{k} {v}" for k, v in waiting.items()))
    click.echo(f"refused jobs: {report['count']}"
               + (" (jobs that are not Nexus-Flow's; see docs/security.md)"
                  if report["count"] else ""))
    for item in report["latest"]:
        click.echo(f"  job {item.get('job')} on {item.get('queue')}: {item.get('reason')}")
