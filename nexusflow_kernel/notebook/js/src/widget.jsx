// The inline Nexus-Flow canvas for notebooks (anywidget): a read-only React Flow view of a
// flow document whose nodes glow with the states the kernel pushes over the widget comm.
import React, { memo, useEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import {
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useUpdateNodeInternals
} from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import './widget.css';

// Map an engine node state onto the phase that picks the glow (same names as the Lab canvas).
function phase(run) {
  if (!run || !run.state) return 'idle';
  if ((run.state === 'running' || run.state === 'scheduled') && (run.attempt || 1) > 1) {
    return 'retrying';
  }
  return run.state;
}

// Fit the whole flow into the output area, computed from the flow's own positions (nodes are
// at most 220 x ~70 px) whenever the area changes size. React Flow's `fitView` runs on first
// render, when a notebook output area may still have no size, and left the canvas zoomed in
// on one node.
const NODE_W = 220;
const NODE_H = 70;

function FitToArea({ graph, area }) {
  const { setViewport } = useReactFlow();
  const key = (graph.nodes || []).map(n => `${n.id}@${n.position ? n.position.x : 0},${
    n.position ? n.position.y : 0}`).join(';');
  useEffect(() => {
    const el = area.current;
    const nodes = graph.nodes || [];
    if (!el || !nodes.length) return undefined;
    const fit = () => {
      const w = el.clientWidth;
      const h = el.clientHeight;
      if (!w || !h) return;
      const xs = nodes.map(n => (n.position ? n.position.x : 0));
      const ys = nodes.map(n => (n.position ? n.position.y : 0));
      const minX = Math.min(...xs);
      const minY = Math.min(...ys);
      const spanX = Math.max(...xs) + NODE_W - minX;
      const spanY = Math.max(...ys) + NODE_H - minY;
      const zoom = Math.max(0.2, Math.min(1.25, 0.85 * Math.min(w / spanX, h / spanY)));
      setViewport({
        x: (w - spanX * zoom) / 2 - minX * zoom,
        y: (h - spanY * zoom) / 2 - minY * zoom,
        zoom
      });
    };
    fit();
    const observer = new ResizeObserver(fit);
    observer.observe(el);
    return () => observer.disconnect();
  }, [key, area, setViewport]);
  return null;
}

function NodeView({ id, data }) {
  const { node, typeInfo, run } = data;
  const handles = (typeInfo && typeInfo.output_handles) || [];
  const update = useUpdateNodeInternals();
  const key = handles.join(',');
  useEffect(() => update(id), [id, key, update]);
  const ph = phase(run);
  return (
    <div
      className={`nf-node nf-phase-${ph}`}
      data-node-id={node.id}
      data-state={run ? run.state : 'idle'}
      data-phase={ph}
      data-attempt={run && run.attempt != null ? run.attempt : ''}
      title={(run && run.error) || node.description || ''}
    >
      <Handle type="target" position={Position.Top} />
      <div className="nf-node-title">{node.label || node.id}</div>
      <div className="nf-node-sub">
        <span className="nf-node-type">{(typeInfo && typeInfo.title) || node.type}</span>
        {run && run.state && (
          <span className="nf-node-badge">
            {ph === 'retrying' ? `retry ${run.attempt}` : run.state}
          </span>
        )}
      </div>
      {handles.length === 0 ? (
        <Handle type="source" position={Position.Bottom} />
      ) : (
        handles.map((h, i) => (
          <Handle
            key={h}
            id={h}
            type="source"
            position={Position.Bottom}
            className={`nf-handle-${h}`}
            style={{ left: `${((i + 1) * 100) / (handles.length + 1)}%` }}
          >
            <span className="nf-handle-label">{h}</span>
          </Handle>
        ))
      )}
    </div>
  );
}

const nodeTypes = { nx: memo(NodeView) };

function useTrait(model, name) {
  const [value, setValue] = useState(() => model.get(name));
  useEffect(() => {
    const onChange = () => setValue(model.get(name));
    model.on(`change:${name}`, onChange);
    return () => model.off(`change:${name}`, onChange);
  }, [model, name]);
  return value;
}

function Canvas({ model }) {
  const graph = useTrait(model, 'graph') || {};
  const catalog = useTrait(model, 'catalog') || {};
  const states = useTrait(model, 'states') || {};
  const status = useTrait(model, 'status');
  const runId = useTrait(model, 'run_id');
  const height = useTrait(model, 'height') || 360;
  const area = useRef(null);

  const nodes = useMemo(
    () =>
      (graph.nodes || []).map(n => ({
        id: n.id,
        type: 'nx',
        position: n.position || { x: 0, y: 0 },
        data: { node: n, typeInfo: catalog[n.type], run: states[n.id] },
        draggable: false,
        connectable: false
      })),
    [graph, catalog, states]
  );
  const edges = useMemo(
    () =>
      (graph.edges || []).map(e => {
        const src = states[e.source];
        const running = src && src.state === 'succeeded' && states[e.target] &&
          states[e.target].state === 'running';
        return {
          id: e.id,
          source: e.source,
          target: e.target,
          sourceHandle: e.source_handle || null,
          label: e.source_handle || e.label || undefined,
          animated: !!running,
          className: `nf-edge${running ? ' nf-edge-running' : ''}${
            src && src.state === 'skipped' ? ' nf-edge-skipped' : ''
          }`
        };
      }),
    [graph, states]
  );
  const counts = {};
  Object.values(states).forEach(s => {
    counts[s.state] = (counts[s.state] || 0) + 1;
  });
  return (
    <div className="nf-panel nf-inline" style={{ height }} data-run-status={status || ''}>
      <div className="nf-inline-head">
        <b>{graph.name || 'flow'}</b>
        <span className="nf-help">
          {(graph.nodes || []).length} nodes · {(graph.edges || []).length} edges
        </span>
        {runId && (
          <span className={`nf-pill nf-pill-${status}`} data-run-id={runId}>
            {status || 'running'}
          </span>
        )}
        {Object.entries(counts).map(([k, v]) => (
          <span key={k} className="nf-help">
            {k}: {v}
          </span>
        ))}
      </div>
      <div className="nf-inline-body" ref={area}>
        <ReactFlow
          nodes={nodes}
          edges={edges}
          nodeTypes={nodeTypes}
          nodesDraggable={false}
          nodesConnectable={false}
          proOptions={{ hideAttribution: true }}
          minZoom={0.2}
        >
          <Background gap={16} />
          <Controls showInteractive={false} />
          <FitToArea graph={graph} area={area} />
        </ReactFlow>
      </div>
    </div>
  );
}

function render({ model, el }) {
  const root = createRoot(el);
  root.render(
    <ReactFlowProvider>
      <Canvas model={model} />
    </ReactFlowProvider>
  );
  return () => root.unmount();
}

export default { render };
