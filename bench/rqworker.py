"""One raw RQ worker process for the baseline: ``rq.SimpleWorker`` with the JSON serializer.

The same worker class and serializer Nexus-Flow's workers use, with nothing of Nexus-Flow's
on top. Started by the bench as ``python -m bench.rqworker QUEUE`` with ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import sys

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer


def main() -> None:
    queue = sys.argv[1] if len(sys.argv) > 1 else "bench-raw"
    conn = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    worker = SimpleWorker([queue], connection=conn, serializer=JSONSerializer)
    # WARNING like Nexus-Flow's workers: RQ's per-job INFO lines would cost time.
    worker.work(with_scheduler=False, logging_level="WARNING")


if __name__ == "__main__":
    main()
