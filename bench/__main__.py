"""``python -m bench``: raw RQ beside Nexus-Flow on the same Redis and PostgreSQL.

    python -m bench [--workers 1,2] [--repeats 3] [--quick] [--json out.json]
                    [--scaleout/--no-scaleout] [--no-websocket]

Backends: ``NEXUSFLOW_DATABASE_URL`` (an admin database: the bench creates a fresh database
next to it and drops it at the end) and ``NEXUSFLOW_REDIS_URL`` (the bench uses logical
database ``BENCH_REDIS_DB``, default 12, and flushes it before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2",
                   help="comma-separated worker process counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats per shape (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes: checks the shapes run")
    p.add_argument("--json", dest="json_out", help="also write the raw results here")
    p.add_argument("--scaleout", dest="scaleout", action="store_true", default=None,
                   help="measure workers in network namespaces (root; default: on when root "
                        "and not --quick)")
    p.add_argument("--no-scaleout", dest="scaleout", action="store_false")
    p.add_argument("--scale-hosts", default="1,2,3", help="namespace host counts (default 1,2,3)")
    p.add_argument("--scale-processes", type=int, default=1,
                   help="worker processes per namespace host (default 1)")
    p.add_argument("--no-websocket", action="store_true",
                   help="do not start a jupyter server for the websocket latency")
    p.add_argument("--redis-db", type=int, default=None, help="private Redis logical db")
    p.add_argument("--only", default=None,
                   help="comma-separated shape kinds to run (wide, chain, lattice, diamond, "
                        "map, http): a partial table, for a busy machine")
    p.add_argument("--no-depends-on", action="store_true",
                   help="skip raw RQ's depends_on shapes (the 1,000-wide one takes ~30 s)")
    p.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the memory growth probe (three lattice runs)")
    p.add_argument("--render", metavar="JSON",
                   help="print the table of an earlier --json file; measure nothing")
    p.add_argument("--markdown", action="store_true", help="with --render: as Markdown")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(width=int(os.environ.get("BENCH_WIDTH", "200")))
    if args.render:
        from . import report

        with open(args.render) as f:
            res = json.load(f)
        if args.markdown:
            print(report.markdown(res))
        else:
            report.render(res, console)
        return 0
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    repeats = args.repeats or (1 if args.quick else 3)
    scaleout = args.scaleout
    if scaleout is None:
        scaleout = not args.quick and os.geteuid() == 0

    from . import report
    from .env import backends
    from .suite import Suite

    with backends(redis_db=args.redis_db) as be:
        suite = Suite(be, workers=workers, repeats=repeats, quick=args.quick, console=console,
                      websocket=not args.no_websocket,
                      only=set(args.only.split(",")) if args.only else None,
                      memory=not args.no_memory, depends_on=not args.no_depends_on,
                      celery=not args.no_celery)
        try:
            results = suite.run()
        finally:
            suite.close()
            if args.json_out:  # whatever was measured, even when interrupted
                with open(args.json_out, "w") as f:
                    json.dump(suite.results, f, indent=1, default=str)
    if scaleout:
        from . import scaleout as so

        hosts = [int(h) for h in args.scale_hosts.split(",") if h.strip()]
        try:
            results["scaleout"] = so.measure(hosts, args.scale_processes, repeats,
                                             quick=args.quick, console=console)
        except Exception as exc:
            console.log(f"scale-out failed: {exc!r}")
            results["scaleout"] = {"skipped": f"failed: {exc}"[:300]}
    elif args.scaleout is None:
        results["scaleout"] = {"skipped": "needs root" if os.geteuid() else "--quick"}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    report.render(results, console)
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
