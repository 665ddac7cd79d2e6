"""The reconciler: makes PostgreSQL's record and Redis's queues agree again, with no human.

Each pass (a few seconds apart, one active pass at a time across all hosts thanks to a
PostgreSQL advisory lock):
- a running node whose lease expired (its worker was killed or cut off) is recorded as a
  lost attempt and retried, or failed when it has no attempts left;
- a queued node whose RQ job is missing from Redis (Redis restarted empty, a push that failed
  after the commit) is pushed again — the same job id, so a duplicate is harmless;
- a scheduled node (retry wait or delay) that is due but whose job is gone is pushed, and so
  is the wake-up of a waiting node (an approval, a wait) whose timeout passed;
- free pool slots are handed to waiting pooled nodes;
- map items work the same way: an item whose lease expired is recorded as a lost attempt
  and retried (the map ends if it was its last item), and a map with items ready but no
  claim for a while gets a run job again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from nexusflow_kernel.transport.broker import Push, job_id

from . import metrics
from .jobs import Runtime, alive_key

logger = logging.getLogger(__name__)

_LOCK_ID = 0x6E667263  # one reconciler pass at a time, across every host
_OUTAGE_S = 2.0  # a pass that waited this long for a connection saw PostgreSQL away


@dataclass
class PassReport:
    """What one pass repaired."""

    reclaimed: int = 0
    repushed: int = 0
    skipped: bool = False
    waited_s: float = 0.0  # to get a connection: long means PostgreSQL was away


def reconcile_once(rt: Runtime, *, reclaim: bool = True) -> PassReport:
    """Run one reconciler pass; return what it repaired.

    ``reclaim=False`` leaves expired leases alone for this pass (see ``Reconciler``); so does
    a pass that waited more than ``_OUTAGE_S`` for PostgreSQL.
    """
    report = PassReport()
    asked = time.monotonic()
    with rt.pool.connection() as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_LOCK_ID,)).fetchone()
        conn.commit()
        report.waited_s = time.monotonic() - asked
        if not got["ok"]:
            report.skipped = True
            return report
        try:
            if reclaim and report.waited_s < _OUTAGE_S:
                _reclaim(rt, report)
                _reclaim_items(rt, report)
            _repush(rt, report)
            _grant_pools(rt)
            _repush_maps(rt, report)
            _drop_orphans(rt)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            conn.commit()
    return report


def _reclaim(rt: Runtime, report: PassReport) -> None:
    for row in rt.store.expired_leases():
        effects = rt.store.reclaim_lost(row)
        if effects is None:
            continue
        report.reclaimed += 1
        metrics.lease_lost("reconciler")
        metrics.runs_finished(effects.events)
        logger.warning("node %s of run %s lost its worker; attempt %s recorded as lost",
                       row["node_id"], row["run_id"], row["attempt"])
        rt.broker.publish(effects.pushes, effects.events)
        if row["job"]:
            _forget_started(rt, row["job"])


def _reclaim_items(rt: Runtime, report: PassReport) -> None:
    for row in rt.store.expired_items():
        effects = rt.store.reclaim_items(row["run_id"], row["idx"], row["token"])
        if effects is None:
            continue
        report.reclaimed += 1
        metrics.lease_lost("reconciler")
        metrics.runs_finished(effects.events)
        logger.warning("items of map #%s in run %s lost their worker; recorded as lost",
                       row["idx"], row["run_id"])
        rt.broker.publish(effects.pushes, effects.events)


def _repush_maps(rt: Runtime, report: PassReport) -> None:
    rows = rt.store.stale_maps(rt.settings.requeue_grace_s)
    if rows:
        rt.broker.publish([Push(r["run_id"], -1, 0, r["queue"], ready=1, force=True)
                           for r in rows])
        report.repushed += len(rows)
        logger.info("pushed a run job for %d map(s) with items waiting", len(rows))


def _forget_started(rt: Runtime, jid: str) -> None:
    """Drop a lost attempt's job from RQ's started registry (its dead worker never will;
    RQ itself would only after its ~90 s heartbeat TTL and a maintenance pass)."""
    r = rt.broker.redis
    for queue in rt.broker.queues.values():
        key = StartedJobRegistry(queue=queue).key
        entries = [m for m in r.zscan_iter(key, match=f"{jid}*", count=1000)
                   if m[0].decode() == jid or m[0].decode().startswith(jid + ":")]
        if entries:
            r.zrem(key, *(m[0] for m in entries))
    r.delete(Job.key_for(jid))


def _drop_orphans(rt: Runtime) -> None:
    """Drop started-registry entries of jobs that are gone or whose worker died.

    RQ can hand one job to two workers (its intermediate-queue recovery); the claim makes
    the second a no-op, but once the first deleted the job (``result_ttl=0``) the second
    cannot clean its registry entry. And a killed worker's job stays "started" for RQ's
    heartbeat TTL plus a maintenance pass (minutes). Every live worker refreshes a short
    ``nexusflow:alive:<name>`` key, so a dead one's jobs are known within seconds; the nodes
    they held are recovered from PostgreSQL by their leases, not from these entries.
    """
    r = rt.broker.redis
    for queue in rt.broker.queues.values():
        key = StartedJobRegistry(queue=queue).key
        members = [m for m, _score in r.zscan_iter(key, count=1000)]
        if not members:
            continue
        pipe = r.pipeline(transaction=False)
        for m in members:
            pipe.hget(Job.key_for(m.decode().split(":")[0]), "worker_name")
        owners = pipe.execute()
        pipe = r.pipeline(transaction=False)
        for owner in owners:
            pipe.exists(alive_key(owner.decode()) if owner else "nexusflow:alive:-")
        alive = pipe.execute()
        dead = [m for m, owner, ok in zip(members, owners, alive, strict=True)
                if not ok and (owner is not None or not r.exists(
                    Job.key_for(m.decode().split(":")[0])))]
        if dead:
            r.zrem(key, *dead)
            r.delete(*{Job.key_for(m.decode().split(":")[0]) for m in dead})


def _grant_pools(rt: Runtime) -> None:
    """Hand out pool slots that nobody handed out (a grant is also made whenever a pooled node
    ends; this repairs whatever a crash between the two left)."""
    effects = rt.store.grant_all_pools()
    if effects.pushes or effects.events:
        rt.broker.publish(effects.pushes, effects.events)


def _repush(rt: Runtime, report: PassReport) -> None:
    rows = rt.store.stale_queued(rt.settings.requeue_grace_s)
    if not rows:
        return
    # Queued nodes have no job of their own: a run job takes whatever is ready. One more
    # per run and queue is enough to get a stalled run going (a spare one finds nothing).
    waiting = [r for r in rows if r["state"] == "queued"]
    runs = sorted({(r["run_id"], r["queue"]) for r in waiting})
    if runs:
        rt.broker.publish([Push(run, -1, 0, queue, ready=1, force=True)
                           for run, queue in runs])
        report.repushed += len(runs)
        rt.store.touch_queued([(r["run_id"], r["idx"]) for r in waiting])
        logger.info("pushed a run job for %d run(s) with nodes waiting", len(runs))
    rows = [r for r in rows if r["state"] in ("scheduled", "waiting")]  # due wake-ups
    if not rows:
        return
    ids = [job_id(r["run_id"], r["idx"], r["attempt"], r["wake"]) for r in rows]
    pipe = rt.broker.redis.pipeline(transaction=False)
    for jid in ids:
        pipe.hget(Job.key_for(jid), "status")
    statuses = pipe.execute()
    missing, missing_ids, present = [], [], []
    overdue = rt.broker.redis.pipeline(transaction=False)
    for r, jid, status in zip(rows, ids, statuses, strict=True):
        if status in (b"queued", b"started"):
            present.append((r["run_id"], r["idx"]))
            continue
        if status == b"scheduled":
            # Overdue in RQ's scheduled registry (put there by a version before the timer,
            # with no RQ scheduler running now): take it out and push it now.
            overdue.zrem(ScheduledJobRegistry(queue=rt.broker.queue_for(r["queue"])).key, jid)
        missing.append(Push(r["run_id"], r["idx"], r["attempt"], r["queue"], wake=r["wake"]))
        missing_ids.append(jid)
    overdue.execute()
    # Those still waiting in the timer's set (no supervisor runs a timer) are pushed now
    # instead: drop them there.
    rt.broker.forget_due(missing_ids)
    if missing:
        rt.broker.publish(missing)
        report.repushed += len(missing)
        logger.warning("re-pushed %d node job(s) missing from Redis", len(missing))
    rt.store.touch_queued([(p.run_id, p.idx) for p in missing] + present)


class Reconciler(threading.Thread):
    """Runs ``reconcile_once`` every ``settings.reconcile_interval_s`` until stopped."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="nexusflow-reconciler", daemon=True)
        self.rt = rt
        self.stopping = threading.Event()

    def run(self) -> None:
        # After a database outage every lease looks expired, although the workers holding
        # them are alive and only waiting to renew or to record a finished result. Leave
        # leases alone for a grace period after the last failed pass, so those workers get
        # through first and no finished result is thrown away as "lost".
        s = self.rt.settings
        grace = max(5.0, 2 * s.heartbeat_s + 3.0)
        hold_until = 0.0
        while not self.stopping.wait(s.reconcile_interval_s):
            try:
                report = reconcile_once(self.rt, reclaim=time.monotonic() >= hold_until)
                if report.waited_s >= _OUTAGE_S:
                    hold_until = time.monotonic() + grace
            except Exception as exc:  # a backend outage: try again next pass
                logger.warning("reconciler pass failed: %s", exc)
                hold_until = time.monotonic() + grace
                time.sleep(min(5.0, s.reconcile_interval_s))

    def stop(self) -> None:
        self.stopping.set()
