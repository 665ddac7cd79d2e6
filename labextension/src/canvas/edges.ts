/** The flow's edges as React Flow draws them, with the run's glow on them. Pure. */
import type { Edge } from '@xyflow/react';
import type { IFlowEdge } from '../graph.js';
import type { INodeRun } from './types.js';

export interface IEdgeMarks {
  /** Edge ids the user has selected (Lab only). */
  selected?: ReadonlySet<string>;
  /** Node ids on a cycle: an edge between two of them is marked as the problem. */
  onCycles?: ReadonlySet<string>;
}

/**
 * Return one React Flow edge per flow edge: animated and amber while its target runs,
 * dashed when its source was skipped, red when it lies on a cycle.
 */
export function flowEdges(
  edges: readonly IFlowEdge[],
  runs: ReadonlyMap<string, INodeRun>,
  marks: IEdgeMarks = {}
): Edge[] {
  return edges.map(e => {
    const running = runs.get(e.target)?.state === 'running';
    const skipped = runs.get(e.source)?.state === 'skipped';
    const problem = !!marks.onCycles?.has(e.source) && !!marks.onCycles?.has(e.target);
    return {
      id: e.id,
      source: e.source,
      target: e.target,
      sourceHandle: e.source_handle ?? null,
      label: e.label ?? (e.source_handle || undefined),
      selected: marks.selected?.has(e.id) ?? false,
      animated: running,
      className: `nf-edge${running ? ' nf-edge-running' : ''}${skipped ? ' nf-edge-skipped' : ''}${
        problem ? ' nf-edge-problem' : ''
      }`,
      data: { edgeId: e.id }
    };
  });
}
