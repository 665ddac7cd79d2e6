"""Default values; every one can be changed through settings (``NEXUSFLOW_*``)."""

SCHEMA_VERSION = 1
"""The flow document schema version this release reads and writes."""

MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
"""Largest flow document accepted, in bytes of JSON text."""

MAX_NODES = 50_000
"""Most nodes one flow may hold."""

MAX_EDGES = 200_000
"""Most edges one flow may hold."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of JSON containers accepted in a flow document."""

QUEUE_NAME = "nexusflow"
"""The RQ queue that ordinary nodes go through."""

SANDBOX_QUEUE_NAME = "nexusflow-sandbox"
"""The RQ queue for nodes that run in the Docker sandbox, so slow containers starve nobody."""

LEASE_S = 13.0
"""How long a claim on a running node lasts before the reconciler may take it back.

13 s keeps both promises: a killed worker's node runs again within 15 s (lease expiry plus
one reconciler pass), and a worker cut off from PostgreSQL for 10 s keeps its node (it stops
the node only one second before the lease would run out)."""

HEARTBEAT_S = 3.0
"""How often a worker renews the lease of the node it runs."""

RECONCILE_INTERVAL_S = 2.0
"""How often the reconciler looks for lost jobs, expired leases and due retries."""

REQUEUE_GRACE_S = 5.0
"""How long a queued node may be missing from Redis before the reconciler pushes it again."""

NO_WORKER_WAIT_S = 15.0
"""How long ``nexusflow run`` and a notebook's ``run.wait()`` follow a run whose queued node no
live worker serves before they give up (the run is kept: start a worker, then wait again)."""

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
"""Largest node output stored, in bytes of JSON; a bigger one fails the node."""

MAX_LOG_BYTES = 256 * 1024
"""Largest log text kept per attempt; the rest is cut with a marker."""

IO_SLOTS = 64
"""I/O-bound nodes (HTTP, SQL, AI) one worker process keeps waiting at once, in threads;
as many again for map items of those types."""

DEFAULT_MAX_ATTEMPTS = 1
"""Attempts per node when the node has no ``retry``."""

DEFAULT_BACKOFF_S = 1.0
"""First retry delay when ``retry.backoff_s`` is not given."""

DEFAULT_BACKOFF_FACTOR = 2.0
"""Growth of the retry delay per attempt."""

DEFAULT_MAX_BACKOFF_S = 300.0
"""Cap of one retry delay."""

DEFAULT_NODE_TIMEOUT_S = 3600.0
"""Wall-clock limit of one attempt when the node has no ``timeout_s``."""

JOB_TIMEOUT_MARGIN_S = 30.0
"""Extra time RQ allows a job beyond the node timeout before it kills the work-horse."""

EVENT_STREAM_MAXLEN = 100_000
"""Approximate length cap of each run's event stream in Redis."""

ALL_RUNS_STREAM_MAXLEN = 10_000
"""Approximate length cap of the stream of all runs' events."""

KEY_PREFIX = "nexusflow"
"""Prefix of every Redis key Nexus-Flow writes."""

MAX_SUBFLOW_DEPTH = 8
"""Deepest nesting of sub-flows (a run, its child, the child's child ...): deeper is refused
when the run starts, and again when each child starts."""
