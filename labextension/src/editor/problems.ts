/** What is wrong with the flow as drawn: dangling edges, cycles, unknown node types. Pure. */
import type { IFlow, IFlowEdge } from '../graph.js';

/** Return the edges whose two ends exist (the others cannot be drawn). */
export function drawableEdges(flow: IFlow): IFlowEdge[] {
  const ids = new Set(flow.nodes.map(n => n.id));
  return flow.edges.filter(e => ids.has(e.source) && ids.has(e.target));
}

/** Return one sentence per problem; `types` is null while the node types are unknown. */
export function flowProblems(
  flow: IFlow,
  onCycles: ReadonlySet<string>,
  types: ReadonlyMap<string, unknown> | null
): string[] {
  const out: string[] = [];
  const ids = new Set(flow.nodes.map(n => n.id));
  for (const e of flow.edges) {
    if (!ids.has(e.source) || !ids.has(e.target)) {
      out.push(`edge ${e.id} points at a missing node (${ids.has(e.source) ? e.target : e.source})`);
    }
  }
  if (onCycles.size) {
    out.push(`a cycle runs through ${Array.from(onCycles).join(', ')}: remove one of its edges`);
  }
  if (types) {
    for (const n of flow.nodes) {
      if (!types.has(n.type)) {
        out.push(`node ${n.id} has the unknown type '${n.type}'`);
      }
    }
  }
  return out;
}
