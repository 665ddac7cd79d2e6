/** Connecting two nodes: a cycle is refused with its reason, a duplicate edge is not added. */
import { useCallback } from 'react';
import type { Connection, Edge, FinalConnectionState } from '@xyflow/react';
import { cycleIfConnected, edgeIdFor, IFlow, IFlowEdge } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import type { Notify } from './notice.js';

type EdgeEnds = { source: string; target: string };

/** Return why `source → target` may not be added to `edges` (it closes a cycle), or null. */
export function connectionRefusal(edges: readonly EdgeEnds[], source: string, target: string): string | null {
  const cycle = cycleIfConnected(edges as EdgeEnds[], source, target);
  if (!cycle) {
    return null;
  }
  return source === target
    ? `Cannot connect ${source} to itself: a flow has no cycles.`
    : `Cannot connect ${source} → ${target}: it would make the cycle ${cycle.join(' → ')}.`;
}

/** Return the edge a connection adds to `flow`, or why none is added. */
export function edgeForConnection(
  flow: IFlow,
  drawable: readonly EdgeEnds[],
  c: { source: string; target: string; sourceHandle?: string | null }
): { edge: IFlowEdge } | { refused: string; kind: 'error' | 'info' } {
  const reason = connectionRefusal(drawable, c.source, c.target);
  if (reason) {
    return { refused: reason, kind: 'error' };
  }
  const handle = c.sourceHandle ?? null;
  if (flow.edges.some(e => e.source === c.source && e.target === c.target && (e.source_handle ?? null) === handle)) {
    return { refused: `${c.source} is already connected to ${c.target}.`, kind: 'info' };
  }
  const edge: IFlowEdge = {
    id: edgeIdFor(c.source, c.target, handle, new Set(flow.edges.map(e => e.id))),
    source: c.source,
    target: c.target
  };
  if (handle) {
    edge.source_handle = handle;
  }
  return { edge };
}

/** React Flow's connection callbacks, writing accepted edges to the document. */
export function useConnect(doc: NxFlowDoc, flow: IFlow, drawable: readonly IFlowEdge[], notify: Notify) {
  const onConnect = useCallback(
    (c: Connection) => {
      const result = edgeForConnection(flow, drawable, c);
      if ('edge' in result) {
        doc.addElements([], [result.edge]);
      } else {
        notify(result.refused, result.kind);
      }
    },
    [doc, flow, drawable, notify]
  );
  const isValidConnection = useCallback(
    (c: Connection | Edge) => connectionRefusal(drawable, c.source, c.target) === null,
    [drawable]
  );
  const onConnectEnd = useCallback(
    (_: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      if (state.isValid === false && state.fromNode && state.toNode) {
        const reason = connectionRefusal(drawable, state.fromNode.id, state.toNode.id);
        if (reason) {
          notify(reason);
        }
      }
    },
    [drawable, notify]
  );
  return { onConnect, isValidConnection, onConnectEnd };
}
