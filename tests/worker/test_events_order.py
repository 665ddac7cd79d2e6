"""A worker's buffered node events never fall behind the events it sends at once."""

from __future__ import annotations

import json
import threading

from nexusflow_kernel.services import resolve_backends
from nexusflow_kernel.transport.broker import Broker, event, events_key


def test_a_run_final_event_never_overtakes_a_buffered_node_event(settings) -> None:
    broker = Broker(resolve_backends(settings), buffer_events=True)
    run_id = "00000000-0000-0000-0000-0000000000ab"
    sending = threading.Event()
    release = threading.Event()
    real_add = broker._add_events

    def slow_add(pipe, events):  # the flush thread stalls after taking the node event
        if threading.current_thread().name == "nexusflow-events":
            sending.set()
            release.wait(10)
        return real_add(pipe, events)

    broker._add_events = slow_add  # type: ignore[method-assign]
    broker.publish((), [event(run_id, "t3", "running", 1)])  # buffered
    assert sending.wait(10), "the flush thread did not pick the buffered event up"
    # The node ends and the run with it: sent at once, while the flush is still under way.
    direct = threading.Thread(target=broker.publish, args=((), [
        event(run_id, "t3", "succeeded", 1), event(run_id, None, "succeeded")]))
    direct.start()
    direct.join(0.3)
    release.set()
    direct.join(10)
    assert not direct.is_alive()
    entries = broker.redis.xrange(events_key(run_id))
    seen = [(e["node"], e["state"]) for e in (json.loads(f[b"e"]) for _i, f in entries)]
    assert seen == [("t3", "running"), ("t3", "succeeded"), (None, "succeeded")]
