"""Results a node gives without running: its pinned output, or a recent result of the same work.

**Pins.** A node may carry ``pin: {"output": ...}``. In a run started with pins
(``executions.options.use_pins``, only for runs started by hand) the node succeeds at once with
that output; its record says ``pinned``.

**Cache.** A node with ``cache: {"ttl_s": N}`` is keyed by what it runs on: the workflow, its
type, its config as rendered *with its secrets resolved* (the code of a ``@task`` or code node is
in its config), the values of the secrets it may read, its inputs and the run's params, all as
the node gets them (children get their parents' masked outputs, so the inputs are what the node
sees). The key is an HMAC with a key derived from the secrets key when a secret value is part of
it (a stored key never lets anyone guess a secret), a SHA-256 otherwise; no value is stored. When
a node of the same workflow succeeded with the same key within ``ttl_s``, this node succeeds
with that output and ``cached_from: {run_id, node_id}``, without running. A result served from
the cache does not serve others in turn (it is not a fresh result). Runs started with
``cache=False`` are never served, but what their nodes compute serves later runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from nexusflow_kernel.runstate.transitions import Claim, Outcome

if TYPE_CHECKING:  # pragma: no cover
    from nexusflow_kernel.model.document import Node
    from nexusflow_kernel.nodes import NodeType
    from nexusflow_kernel.runstate.db import Pool
    from nexusflow_kernel.settings import Settings


class Runtime(Protocol):
    """What this module needs of the worker's runtime (``jobs.Runtime``, which sits above)."""

    pool: Pool
    settings: Settings


def _stamp(text: str) -> str:
    return f"{time.strftime('%H:%M:%S')} {text}"


class Reuse:
    """Pins and cache for one claimed node (reads the run's options only when it must)."""

    def __init__(self, rt: Runtime, claim: Claim, node: Node) -> None:
        self.rt, self.claim, self.node = rt, claim, node
        self._run: tuple[str, dict[str, Any]] | None = None

    @property
    def run(self) -> tuple[str, dict[str, Any]]:
        """Return the run's ``(workflow id, options)``."""
        if self._run is None:
            with self.rt.pool.connection() as conn:
                row = conn.execute("SELECT workflow_id, options FROM executions WHERE id=%s",
                                   (self.claim.run_id,)).fetchone()
            self._run = (str(row["workflow_id"]), dict(row["options"] or {})) if row \
                else ("", {})
        return self._run

    def pinned(self, node_type: NodeType) -> Outcome | None:
        """Return the pinned output's outcome, when the node has one and the run uses pins."""
        if self.node.pin is None or not self.run[1].get("use_pins"):
            return None
        output = self.node.pin.get("output")
        blob = json.dumps(output, separators=(",", ":"), allow_nan=False)
        return Outcome("succeeded", output=output, output_json=blob,
                       branch=node_type.branch(output), duration_ms=0.0, pinned=True,
                       input={"config": None, "inputs": self.claim.inputs},
                       log=_stamp("pinned output used: the run was started with pins"))

    def key(self, node_type: NodeType, config: Any,
            resolve: Callable[[str], str] | None) -> str | None:
        """Return the node's cache key (``None`` without a ``cache`` field).

        ``config`` is the rendered config with its secrets resolved; the other secrets the
        node may read (a code node's ``secrets`` list) are resolved here through ``resolve``
        (which remembers their values for masking).
        """
        if not self.node.cache:
            return None
        names = sorted(node_type.secret_names(self.node.config))
        values = {name: resolve(name) for name in names} if resolve is not None and names \
            else {}
        material = json.dumps(
            {"workflow": self.run[0], "type": self.node.type, "config": config,
             "secrets": values, "inputs": self.claim.inputs, "params": self.claim.params},
            sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()
        if values:
            return "h:" + hmac.new(_hmac_key(self.rt), material, hashlib.sha256).hexdigest()
        return "s:" + hashlib.sha256(material).hexdigest()

    def cached(self, key: str | None, node_type: NodeType, rendered: Any) -> Outcome | None:
        """Return the outcome of a result served from the cache, or ``None`` (run the node)."""
        if key is None or self.run[1].get("cache") is False or not self.node.cache:
            return None
        ttl = float(self.node.cache.get("ttl_s") or 0)
        with self.rt.pool.connection() as conn:
            row = conn.execute(
                "SELECT n.execution_id::text AS run_id, n.node_id, n.output::text AS blob,"
                " n.ended_at FROM node_runs n JOIN executions e ON e.id = n.execution_id"
                " JOIN workflows w ON w.id = e.workflow_id"
                " WHERE n.cache_key=%s AND n.state='succeeded' AND e.workflow_id=%s"
                " AND w.deleted_at IS NULL AND n.cached_from IS NULL"
                " AND n.ended_at > clock_timestamp() - make_interval(secs => %s)"
                " AND NOT (n.execution_id=%s AND n.node_id=%s)"
                " ORDER BY n.ended_at DESC LIMIT 1",
                (key, self.run[0], ttl, self.claim.run_id, self.claim.node_id)).fetchone()
        if row is None:
            return None
        blob = row["blob"] if row["blob"] is not None else "null"
        output = json.loads(blob)
        source = {"run_id": row["run_id"], "node_id": row["node_id"]}
        return Outcome("succeeded", output=output, output_json=blob,
                       branch=node_type.branch(output), duration_ms=0.0, cached_from=source,
                       input={"config": rendered, "inputs": self.claim.inputs},
                       log=_stamp(f"served from the cache: the result of node "
                                  f"{row['node_id']!r} in run {row['run_id']}, "
                                  f"{row['ended_at'].isoformat(timespec='seconds')}"))


_keys: dict[str, bytes] = {}


def _hmac_key(rt: Runtime) -> bytes:
    """Return the cache's HMAC key, derived from the secrets key (a node resolved a secret,
    so the secrets key is there)."""
    from nexusflow_kernel.secrets import load_keys

    where = f"{rt.settings.secret_key or ''}|{rt.settings.data_dir}"
    key = _keys.get(where)
    if key is None:
        first = load_keys(rt.settings.secret_key, rt.settings.data_dir)[0]
        key = _keys[where] = hashlib.sha256(b"nexusflow-cache-key\x00" + first).digest()
    return key


__all__ = ["Reuse"]
