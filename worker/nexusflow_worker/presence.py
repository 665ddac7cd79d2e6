"""What a worker tells the others about itself: the queues it serves and how it runs code.

The lease keeper stores the advert under the worker's alive key every heartbeat
(``nexusflow_kernel.transport.presence``); the CLI, notebooks and the server read it to say at
once when a node waits on a queue nobody serves, or when the workers cannot run code. Whether
a Docker engine answers is checked just after the worker starts and again every ``RECHECK_S``
in a thread of its own, so neither the worker's start nor a lease renewal waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from nexusflow_kernel.settings import Settings
from nexusflow_kernel.transport.presence import advert

logger = logging.getLogger(__name__)

RECHECK_S = 30.0
"""How often a worker looks again whether the Docker engine answers."""


def code_isolation(settings: Settings) -> tuple[str, str | None]:
    """Return what code nodes get on this worker now, and why they cannot run when they
    cannot: ``("docker" | "process" | "none" | "unavailable", problem)``."""
    from .sandbox import POLICIES, effective_policy

    policy = settings.code_isolation
    if policy not in POLICIES:
        return "unavailable", (f"NEXUSFLOW_CODE_ISOLATION={policy!r} is not one of "
                               f"{', '.join(POLICIES)}")
    problem = None
    if policy in ("auto", "docker"):
        from .sandbox import engine_error

        problem = engine_error()
    return effective_policy(policy, engine_problem=problem), problem


class Advert:
    """The advert of one worker process, kept fresh by a daemon thread.

    Whether a Docker engine answers takes up to a second to learn (the SDK's import and a
    ping): the worker does not wait for it. Until the thread knows, a worker whose policy
    needs Docker says ``"code": "checking"``.
    """

    def __init__(self, settings: Settings, name: str, queues: Sequence[str]) -> None:
        self.settings = settings
        self.name = name
        self.queues = [q for q in queues if q]
        needs_docker = settings.code_isolation in ("auto", "docker")
        self._text = (advert(name, self.queues, settings.code_isolation, "checking")
                      if needs_docker else self._make())
        self._stop = threading.Event()
        threading.Thread(target=self._loop, args=(needs_docker,), name="nexusflow-advert",
                         daemon=True).start()

    def _make(self) -> str:
        code, problem = code_isolation(self.settings)
        return advert(self.name, self.queues, self.settings.code_isolation, code, problem)

    def _loop(self, now: bool) -> None:
        while now or not self._stop.wait(RECHECK_S):
            now = False
            try:
                self._text = self._make()
            except Exception as exc:  # keep the last advert rather than none
                logger.debug("could not refresh the worker advert: %s", exc)

    def __call__(self) -> str:
        return self._text

    def stop(self) -> None:
        self._stop.set()
