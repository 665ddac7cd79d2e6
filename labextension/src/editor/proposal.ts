/**
 * What "describe a flow" shows, pure: the states of the box, the proposal laid out, and a
 * few words on what it holds.
 */
import type { IProposal } from '../api.js';
import { IFlow, layoutPositions } from '../graph.js';

export type DescribeState =
  | { phase: 'idle' }
  | { phase: 'asking'; text: string }
  | { phase: 'proposed'; text: string; proposal: IProposal; flow: IFlow }
  | { phase: 'failed'; text: string; message: string; pointer?: string; answer?: string; attempts?: number };

/** Return `flow` with every node placed top-down (the model's answer has no positions). */
export function laidOut(flow: IFlow): IFlow {
  const positions = layoutPositions(flow.nodes, flow.edges);
  return { ...flow, nodes: flow.nodes.map(n => ({ ...n, position: positions.get(n.id) ?? { x: 0, y: 0 } })) };
}

/** Say in a few words what a proposal holds: "4 nodes (http, condition, ai ×2), 3 edges". */
export function summary(flow: IFlow): string {
  const counts = new Map<string, number>();
  for (const n of flow.nodes) {
    counts.set(n.type, (counts.get(n.type) ?? 0) + 1);
  }
  const types = Array.from(counts.entries())
    .map(([t, c]) => (c > 1 ? `${t} ×${c}` : t))
    .join(', ');
  const nodes = `${flow.nodes.length} node${flow.nodes.length === 1 ? '' : 's'}`;
  const edges = `${flow.edges.length} edge${flow.edges.length === 1 ? '' : 's'}`;
  return `${nodes} (${types}), ${edges}`;
}
