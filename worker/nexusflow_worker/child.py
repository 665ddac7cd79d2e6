"""Entry point of one worker child process (started by the supervisor)."""

from __future__ import annotations

import argparse
import logging

from nexusflow_kernel.settings import Settings

from .rqworker import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nexusflow_worker.child")
    parser.add_argument("--queues", default="default")
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_worker(Settings.from_env(), args.queues.split(","), fork=args.fork, burst=args.burst,
               log_level=args.log_level.upper())


if __name__ == "__main__":
    main()
