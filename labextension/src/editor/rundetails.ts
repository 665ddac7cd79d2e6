/**
 * What a run says of its nodes beyond their state (an approval's message and approvers, the
 * child run a sub-flow started, a result served from the cache, a pinned output used): read
 * from `GET runs/{id}` again whenever an approval, wait or sub-flow node changes state, and once
 * when the run ends. A cache hit or a pin comes with the node's success event (`cached_from`,
 * `pinned`: see `useFollowedRun`), as in the notebook widget; the read at the end is
 * PostgreSQL's word on them, should an event be lost (events are a cache).
 */
import { useEffect, useMemo, useState } from 'react';
import { api } from '../api.js';
import type { INodeExtra } from '../canvas/actions.js';
import type { INodeRun } from '../canvas/types.js';
import type { IFlowNode } from '../graph.js';

/** Node types whose node shows more than its state. */
export const DETAILED_TYPES = new Set(['subflow', 'approval', 'wait']);

/** Run statuses after which nothing changes but by a retry. */
const ENDED = new Set(['succeeded', 'failed', 'canceled']);

/** The key that changes when the details may have: those nodes' states, the run's end (cache
 *  hits and pins come with events, so cached and pinned nodes ask for nothing while it runs). */
export function detailsKey(
  runId: string | null,
  nodes: readonly IFlowNode[],
  runs: ReadonlyMap<string, INodeRun>,
  status: string | null = null
): string | null {
  if (!runId) {
    return null;
  }
  const parts = nodes
    .filter(n => DETAILED_TYPES.has(n.type) && runs.has(n.id))
    .map(n => `${n.id}:${runs.get(n.id)!.state}`);
  if (status && ENDED.has(status)) {
    parts.push(`$run:${status}`);
  }
  return parts.length ? `${runId}|${parts.join(',')}` : null;
}

/** The run's node states with what its details add (cache hits, pins used). */
export function withDetails(
  runs: ReadonlyMap<string, INodeRun>,
  details: ReadonlyMap<string, INodeExtra>
): ReadonlyMap<string, INodeRun> {
  let out: Map<string, INodeRun> | null = null;
  for (const [id, extra] of details) {
    const run = runs.get(id);
    if (run && (extra.cachedFrom || extra.pinned)) {
      out = out ?? new Map(runs);
      out.set(id, { ...run, cachedFrom: extra.cachedFrom ?? null, pinned: !!extra.pinned });
    }
  }
  return out ?? runs;
}

export function useRunDetails(
  runId: string | null,
  nodes: readonly IFlowNode[],
  runs: ReadonlyMap<string, INodeRun>,
  status: string | null = null
): ReadonlyMap<string, INodeExtra> {
  const key = useMemo(() => detailsKey(runId, nodes, runs, status), [runId, nodes, runs, status]);
  const [details, setDetails] = useState<ReadonlyMap<string, INodeExtra>>(new Map());
  useEffect(() => {
    if (!key || !runId) {
      setDetails(new Map());
      return;
    }
    let live = true;
    const timer = window.setTimeout(() => {
      api
        .run(runId)
        .then(run => {
          if (!live) {
            return;
          }
          const out = new Map<string, INodeExtra>();
          for (const [id, n] of Object.entries(run.nodes)) {
            if (n.waiting || n.child_run || n.cached_from || n.pinned) {
              out.set(id, {
                waiting: n.waiting,
                childRun: n.child_run,
                cachedFrom: n.cached_from,
                pinned: n.pinned
              });
            }
          }
          setDetails(out);
        })
        .catch(() => undefined); // the states still glow; the buttons come with the next change
    }, 150);
    return () => {
      live = false;
      window.clearTimeout(timer);
    };
  }, [key]);
  return details;
}
