/**
 * The document's nodes as React Flow nodes. The document gives what a node is; React Flow's
 * copy adds only what is per page (measured size, the position while a drag is under way).
 */
import { useCallback, useEffect, useState } from 'react';
import { applyNodeChanges, NodeChange } from '@xyflow/react';
import type { INodeType } from '../api.js';
import type { NxNode } from '../canvas/nodeview.js';
import type { INodeRun, IPeer } from '../canvas/types.js';
import type { IFlow } from '../graph.js';
import { configProblem } from './problems.js';

export interface ICanvasNodeInputs {
  flow: IFlow;
  types: ReadonlyMap<string, INodeType> | null;
  runs: ReadonlyMap<string, INodeRun>;
  peers: ReadonlyMap<string, IPeer[]>;
  onCycles: ReadonlySet<string>;
  selected: ReadonlySet<string>;
}

/**
 * Return the React Flow nodes for `inputs`, reusing each node object of `prev` whose look did
 * not change (React Flow then skips it) and keeping the local position of a node being dragged.
 */
export function deriveNodes(prev: readonly NxNode[], inputs: ICanvasNodeInputs): NxNode[] {
  const { flow, types, runs, peers, onCycles, selected } = inputs;
  const before = new Map(prev.map(n => [n.id, n]));
  return flow.nodes.map(node => {
    const old = before.get(node.id);
    const typeInfo = types?.get(node.type);
    const run = runs.get(node.id);
    const nodePeers = peers.get(node.id) ?? [];
    const problem = onCycles.has(node.id) ? 'on a cycle' : configProblem(typeInfo?.config_schema, node.config);
    const sig = JSON.stringify([node, !!typeInfo, !!types, run, nodePeers, problem]);
    const position = old?.dragging ? old.position : node.position ?? { x: 0, y: 0 };
    const isSelected = selected.has(node.id);
    if (
      old &&
      old.data.sig === sig &&
      old.selected === isSelected &&
      old.position.x === position.x &&
      old.position.y === position.y
    ) {
      return old;
    }
    return {
      ...(old ?? {}),
      id: node.id,
      type: 'nx' as const,
      position,
      selected: isSelected,
      data: { node, typeInfo, catalogLoaded: !!types, run, peers: nodePeers, problem, sig }
    } as NxNode;
  });
}

/** Keep React Flow's nodes in step with the document; removals go through the document. */
export function useCanvasNodes(
  inputs: ICanvasNodeInputs
): [NxNode[], (changes: NodeChange<NxNode>[]) => void] {
  const [nodes, setNodes] = useState<NxNode[]>([]);
  const { flow, types, runs, peers, onCycles, selected } = inputs;
  useEffect(() => {
    setNodes(prev => deriveNodes(prev, { flow, types, runs, peers, onCycles, selected }));
  }, [flow, types, runs, peers, onCycles, selected]);
  const onChange = useCallback((changes: NodeChange<NxNode>[]) => {
    setNodes(nds => applyNodeChanges(changes.filter(c => c.type !== 'remove'), nds));
  }, []);
  return [nodes, onChange];
}
