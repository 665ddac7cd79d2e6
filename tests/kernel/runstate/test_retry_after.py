"""A server's Retry-After lengthens a retry's wait, within the node's retry policy."""

from __future__ import annotations

import pytest

from nexusflow_kernel.runstate.plan import backoff_delay


@pytest.mark.parametrize("retry, after, expected", [
    ({"backoff_s": 1}, None, 1.0),           # no Retry-After: the policy's backoff
    ({"backoff_s": 1}, 7.5, 7.5),            # a longer Retry-After wins
    ({"backoff_s": 10}, 2.0, 10.0),          # a shorter one never shortens the backoff
    ({"backoff_s": 1, "max_backoff_s": 30}, 600.0, 30.0),  # within the policy's cap
    (None, 0.0, 1.0),
])
def test_retry_after_is_a_floor_within_the_cap(retry, after, expected) -> None:
    assert backoff_delay(1, retry, retry_after=after) == expected


def test_jitter_never_takes_the_wait_under_retry_after() -> None:
    import random

    rng = random.Random(4)
    for _ in range(100):
        assert backoff_delay(2, {"backoff_s": 1, "jitter": 0.5}, rng=rng, retry_after=3) == 3
