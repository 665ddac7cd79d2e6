/**
 * The inline canvas of a notebook: the Lab canvas's node view, edges and glow on a read-only
 * React Flow, fed by the kernel (traits `graph`, `catalog`, `states`, `run_id`, `status`).
 * Clicking a node of a run opens its details (output, error, input, logs) under the canvas.
 */
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { Background, Controls, NodeChange, ReactFlow } from '@xyflow/react';
import type { AnyModel, Experimental } from '@anywidget/types';
import { NodeDetails } from '../canvas/details.js';
import { flowEdges } from '../canvas/edges.js';
import { NxNode, nodeTypes } from '../canvas/nodeview.js';
import type { INodeLook, INodeRun } from '../canvas/types.js';
import type { IFlow } from '../graph.js';
import { useKernelAttempts, useKernelItems, useTrait } from './comm.js';
import { useFitToArea } from './fit.js';

/** Height the node details add under the canvas. */
const DETAILS_HEIGHT = 240;

const WAITING =
  'Waiting for the kernel: it answers when the cell it is running has finished.';

export function InlineCanvas({ model, experimental }: { model: AnyModel; experimental: Experimental }): JSX.Element {
  const graph = useTrait<Partial<IFlow> | null>(model, 'graph') ?? {};
  const catalog = useTrait<{ [type: string]: INodeLook } | null>(model, 'catalog') ?? {};
  const states = useTrait<{ [node: string]: INodeRun } | null>(model, 'states') ?? {};
  const status = useTrait<string>(model, 'status');
  const runId = useTrait<string>(model, 'run_id');
  const height = useTrait<number>(model, 'height') || 360;
  const [detailsFor, setDetailsFor] = useState<string | null>(null);
  const area = useRef<HTMLDivElement>(null);
  const load = useKernelAttempts(experimental);
  const loadItems = useKernelItems(experimental);
  useEffect(() => setDetailsFor(null), [runId]);

  const flowNodes = graph.nodes ?? [];
  const flowEdgeList = graph.edges ?? [];
  const runs = useMemo(() => new Map(Object.entries(states)), [states]);
  // The size React Flow measured for each node. The nodes are rebuilt on every state change
  // (the glow), and React Flow takes a new node object's size from its `measured` field: left
  // out, each rebuild forgets the size, and a rebuild landing between React Flow's measure and
  // its next render left nodes unmeasured for good (hidden, and skipped by fit view).
  const [sizes, setSizes] = useState<ReadonlyMap<string, { width: number; height: number }>>(new Map());
  const onNodesChange = useCallback((changes: NodeChange<NxNode>[]) => {
    const measured = changes.filter(c => c.type === 'dimensions' && c.dimensions);
    if (!measured.length) {
      return;
    }
    setSizes(prev => {
      const next = new Map(prev);
      for (const c of measured) {
        if (c.type === 'dimensions' && c.dimensions) {
          next.set(c.id, { width: c.dimensions.width, height: c.dimensions.height });
        }
      }
      return next;
    });
  }, []);
  const nodes: NxNode[] = useMemo(() => {
    const known = Object.keys(catalog).length > 0;
    return flowNodes.map(node => ({
      id: node.id,
      type: 'nx' as const,
      position: node.position ?? { x: 0, y: 0 },
      selected: node.id === detailsFor,
      draggable: false,
      connectable: false,
      measured: sizes.get(node.id),
      data: { node, typeInfo: catalog[node.type], catalogLoaded: known, run: runs.get(node.id), peers: [] }
    }));
  }, [flowNodes, catalog, runs, detailsFor, sizes]);
  const edges = useMemo(() => {
    const ids = new Set(flowNodes.map(n => n.id));
    return flowEdges(flowEdgeList.filter(e => ids.has(e.source) && ids.has(e.target)), runs);
  }, [flowNodes, flowEdgeList, runs]);
  useFitToArea(flowNodes, area);

  const counts = new Map<string, number>();
  runs.forEach(r => counts.set(r.state, (counts.get(r.state) ?? 0) + 1));
  const open = detailsFor !== null && !!runId;
  return (
    <div
      className="nf-panel nf-inline"
      style={{ height: height + (open ? DETAILS_HEIGHT : 0), ['--nf-details-height' as string]: `${DETAILS_HEIGHT}px` }}
      data-run-status={status || ''}
    >
      <div className="nf-inline-head">
        <b>{graph.name || 'flow'}</b>
        <span className="nf-help">
          {flowNodes.length} nodes · {flowEdgeList.length} edges
        </span>
        {runId && (
          <span className={`nf-pill nf-pill-${status}`} data-run-id={runId}>
            {status || 'running'}
          </span>
        )}
        {Array.from(counts.entries()).map(([state, n]) => (
          <span key={state} className="nf-help">
            {state}: {n}
          </span>
        ))}
        {runId && !open && <span className="nf-help">Click a node for its output and logs.</span>}
      </div>
      <div className="nf-inline-body" ref={area}>
        <ReactFlow<NxNode>
          nodes={nodes}
          edges={edges}
          nodeTypes={nodeTypes}
          onNodesChange={onNodesChange}
          nodesDraggable={false}
          nodesConnectable={false}
          onNodeClick={(_, n) => runId && setDetailsFor(n.id)}
          onPaneClick={() => setDetailsFor(null)}
          proOptions={{ hideAttribution: true }}
          minZoom={0.2}
        >
          <Background gap={16} />
          <Controls showInteractive={false} />
        </ReactFlow>
      </div>
      {open && (
        <NodeDetails
          runId={runId}
          nodeId={detailsFor}
          run={runs.get(detailsFor)}
          load={load}
          loadItems={loadItems}
          onClose={() => setDetailsFor(null)}
          slowHint={WAITING}
        />
      )}
    </div>
  );
}
