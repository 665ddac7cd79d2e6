/** What is wrong with the flow as drawn: dangling edges, cycles, unknown node types, a node's
 *  config its type's schema refuses. Pure. */
import type { IFlow, IFlowEdge, JSONObject } from '../graph.js';
import { Schema, validate } from './schema.js';

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

/** Say what is wrong with a node's config for its type's schema (the first fault, and how many
 *  more), or nothing when it is valid; the node is marked on the canvas with it. */
export function configProblem(schema: Schema | undefined, config: JSONObject | undefined): string | undefined {
  if (!schema) {
    return undefined;
  }
  const faults = validate(schema, config ?? {});
  if (!faults.length) {
    return undefined;
  }
  const [pointer, message] = faults[0];
  const where = pointer.replace(/^\//, '').replace(/\//g, '.') || 'config';
  return `${where} ${message}${faults.length > 1 ? ` (and ${faults.length - 1} more)` : ''}`;
}
