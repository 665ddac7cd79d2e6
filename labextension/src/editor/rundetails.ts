/**
 * What a run says of its waiting and sub-flow nodes beyond their state (an approval's message
 * and approvers, the child run a sub-flow started): read from `GET runs/{id}` again whenever
 * one of those nodes changes state. Flows without such nodes never ask.
 */
import { useEffect, useMemo, useState } from 'react';
import { api } from '../api.js';
import type { INodeExtra } from '../canvas/actions.js';
import type { INodeRun } from '../canvas/types.js';
import type { IFlowNode } from '../graph.js';

/** Node types whose node shows more than its state. */
export const DETAILED_TYPES = new Set(['subflow', 'approval', 'wait']);

/** The key that changes when the details may have: those nodes' states. */
export function detailsKey(
  runId: string | null,
  nodes: readonly IFlowNode[],
  runs: ReadonlyMap<string, INodeRun>
): string | null {
  if (!runId) {
    return null;
  }
  const parts = nodes
    .filter(n => DETAILED_TYPES.has(n.type) && runs.has(n.id))
    .map(n => `${n.id}:${runs.get(n.id)!.state}`);
  return parts.length ? `${runId}|${parts.join(',')}` : null;
}

export function useRunDetails(
  runId: string | null,
  nodes: readonly IFlowNode[],
  runs: ReadonlyMap<string, INodeRun>
): ReadonlyMap<string, INodeExtra> {
  const key = useMemo(() => detailsKey(runId, nodes, runs), [runId, nodes, runs]);
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
            if (n.waiting || n.child_run) {
              out.set(id, { waiting: n.waiting, childRun: n.child_run });
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
