/**
 * The flow canvas: React Flow on the shared Yjs document.
 *
 * The Y document is the single source of truth for nodes and edges; React Flow's local state
 * only adds what is per-page (selection, measured sizes, the position of a node while it is
 * being dragged). Positions are written to the document once, on drag stop.
 */
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  BackgroundVariant,
  Connection,
  Controls,
  Edge,
  FinalConnectionState,
  MiniMap,
  NodeChange,
  EdgeChange,
  ReactFlow,
  ReactFlowProvider,
  applyNodeChanges,
  useReactFlow
} from '@xyflow/react';
import { api, INodeType } from '../api.js';
import {
  IFlowEdge,
  IFlowNode,
  cycleIfConnected,
  edgeIdFor,
  freshId,
  layoutPositions,
  nodesOnCycles
} from '../graph.js';
import { NxFlowDoc, NxFlowModel } from '../model.js';
import { INodeRun, IPeer, NxNode, nodeTypes, phase } from '../canvas/nodeview.js';
import { FlowInspector, Inspector } from './inspector.js';
import { LogsPanel, RunToolbar, useRunView } from './runs.js';
import { defaultsOf } from './schemaform.js';

export interface ICanvasSettings {
  snapToGrid: boolean;
  gridSize: number;
  showMinimap: boolean;
  showGrid: boolean;
}

export const DEFAULT_SETTINGS: ICanvasSettings = {
  snapToGrid: true,
  gridSize: 20,
  showMinimap: true,
  showGrid: true
};

export interface IEditorProps {
  model: NxFlowModel;
  path: () => string;
  settings: ICanvasSettings;
  openAsText: () => void;
}

const MINIMAP_COLORS: { [phase: string]: string } = {
  running: '#f59e0b',
  retrying: '#f59e0b',
  succeeded: '#16a34a',
  failed: '#dc2626',
  skipped: '#d1d5db'
};

const DND_TYPE = 'application/x-nexusflow-node-type';

/** What Ctrl+C put aside (shared by every canvas of this page). */
let clipboard: { nodes: IFlowNode[]; edges: IFlowEdge[] } | null = null;

interface IAwarenessUser {
  name?: string;
  display_name?: string;
  color?: string;
  initials?: string;
  username?: string;
}

interface IPresence {
  clientId: number;
  user: IAwarenessUser;
  selected: string[];
}

function usePresence(doc: NxFlowDoc): IPresence[] {
  const [peers, setPeers] = useState<IPresence[]>([]);
  useEffect(() => {
    const awareness = doc.awareness;
    const read = () => {
      const out: IPresence[] = [];
      awareness.getStates().forEach((state: any, clientId: number) => {
        if (clientId === awareness.clientID || !state) {
          return;
        }
        out.push({
          clientId,
          user: state.user ?? {},
          selected: state.nexusflow?.selected ?? []
        });
      });
      setPeers(out);
    };
    read();
    awareness.on('change', read);
    return () => awareness.off('change', read);
  }, [doc]);
  return peers;
}

function useDocVersion(doc: NxFlowDoc): number {
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let frame = 0;
    const bump = () => {
      if (!frame) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          setVersion(v => v + 1);
        });
      }
    };
    doc.changed.connect(bump);
    return () => {
      doc.changed.disconnect(bump);
      cancelAnimationFrame(frame);
    };
  }, [doc]);
  return version;
}

type Catalog = { types: Map<string, INodeType> | null; error: string | null };

function useCatalog(): [Catalog, () => void] {
  const [catalog, setCatalog] = useState<Catalog>({ types: null, error: null });
  const load = useCallback(() => {
    setCatalog({ types: null, error: null });
    api.nodeTypes().then(
      list => setCatalog({ types: new Map(list.map(t => [t.type, t])), error: null }),
      err => setCatalog({ types: null, error: (err as Error).message })
    );
  }, []);
  useEffect(load, [load]);
  return [catalog, load];
}

function Palette({ catalog, reload, onAdd }: {
  catalog: Catalog;
  reload: () => void;
  onAdd: (type: INodeType) => void;
}): JSX.Element {
  if (catalog.error) {
    return (
      <div className="nf-palette">
        <div className="nf-palette-title">Nodes</div>
        <div className="nf-banner nf-banner-error" role="alert" data-palette-error>
          Nexus-Flow server not reachable: {catalog.error}. Node types cannot be listed; editing
          existing nodes still works.
        </div>
        <button className="nf-btn" onClick={reload}>
          Retry
        </button>
      </div>
    );
  }
  if (!catalog.types) {
    return (
      <div className="nf-palette">
        <div className="nf-palette-title">Nodes</div>
        <div className="nf-help">Loading node types…</div>
      </div>
    );
  }
  const groups = new Map<string, INodeType[]>();
  for (const t of catalog.types.values()) {
    groups.set(t.category, [...(groups.get(t.category) ?? []), t]);
  }
  return (
    <div className="nf-palette">
      <div className="nf-palette-title">Nodes</div>
      {Array.from(groups.entries()).map(([category, types]) => (
        <div key={category} className="nf-palette-group">
          <div className="nf-section">{category}</div>
          {types.map(t => (
            <div
              key={t.type}
              className="nf-palette-item"
              data-node-type={t.type}
              draggable
              title={`${t.description}\n(drag onto the canvas, or double-click to add)`}
              onDragStart={e => {
                e.dataTransfer.setData(DND_TYPE, t.type);
                e.dataTransfer.effectAllowed = 'move';
              }}
              onDoubleClick={() => onAdd(t)}
            >
              <span className="nf-palette-name">{t.title}</span>
              <span className="nf-help">{t.type}</span>
            </div>
          ))}
        </div>
      ))}
    </div>
  );
}

function describeCycle(cycle: string[]): string {
  return cycle.join(' → ');
}

function Editor({ model, path, settings, openAsText }: IEditorProps): JSX.Element {
  const doc = model.sharedModel;
  const version = useDocVersion(doc);
  const flow = useMemo(() => doc.toFlow(), [doc, version]);
  const invalid = doc.invalid;
  const [catalog, reloadCatalog] = useCatalog();
  const [secrets, setSecrets] = useState<string[] | null>(null);
  const [notice, setNotice] = useState<{ message: string; kind: string } | null>(null);
  const [selectedNodes, setSelectedNodes] = useState<Set<string>>(new Set());
  const [selectedEdges, setSelectedEdges] = useState<Set<string>>(new Set());
  const [logsFor, setLogsFor] = useState<string | null>(null);
  const [rfNodes, setRfNodes] = useState<NxNode[]>([]);
  const [view, pickRun] = useRunView(doc);
  const peers = usePresence(doc);
  const rf = useReactFlow();
  const wrapper = useRef<HTMLDivElement>(null);
  const noticeTimer = useRef(0);

  const notify = useCallback((message: string, kind: 'error' | 'info' = 'error') => {
    setNotice({ message, kind });
    window.clearTimeout(noticeTimer.current);
    noticeTimer.current = window.setTimeout(() => setNotice(null), 8000);
  }, []);

  useEffect(() => {
    api.secrets().then(
      list => setSecrets(list.map(s => s.name)),
      () => setSecrets([])
    );
  }, []);

  // Tell collaborators what this page has selected.
  useEffect(() => {
    doc.awareness.setLocalStateField('nexusflow', { selected: Array.from(selectedNodes) });
  }, [doc, selectedNodes]);

  const nodeIds = useMemo(() => flow.nodes.map(n => n.id), [flow]);
  const validEdges = useMemo(() => {
    const ids = new Set(nodeIds);
    return flow.edges.filter(e => ids.has(e.source) && ids.has(e.target));
  }, [flow, nodeIds]);
  const onCycles = useMemo(() => nodesOnCycles(nodeIds, validEdges), [nodeIds, validEdges]);
  const problems = useMemo(() => {
    const out: string[] = [];
    const ids = new Set(nodeIds);
    for (const e of flow.edges) {
      if (!ids.has(e.source) || !ids.has(e.target)) {
        out.push(`edge ${e.id} points at a missing node (${ids.has(e.source) ? e.target : e.source})`);
      }
    }
    if (onCycles.size) {
      out.push(`a cycle runs through ${Array.from(onCycles).join(', ')}: remove one of its edges`);
    }
    if (catalog.types) {
      for (const n of flow.nodes) {
        if (!catalog.types.has(n.type)) {
          out.push(`node ${n.id} has the unknown type '${n.type}'`);
        }
      }
    }
    return out;
  }, [flow, nodeIds, onCycles, catalog]);

  const peersByNode = useMemo(() => {
    const out = new Map<string, IPeer[]>();
    for (const p of peers) {
      const name = p.user.display_name || p.user.name || p.user.username || 'someone';
      for (const id of p.selected) {
        out.set(id, [...(out.get(id) ?? []), { name, color: p.user.color ?? '#888' }]);
      }
    }
    return out;
  }, [peers]);

  // Derive React Flow nodes from the document, keeping per-page state and object identity.
  useEffect(() => {
    setRfNodes(prev => {
      const before = new Map(prev.map(n => [n.id, n]));
      return flow.nodes.map(node => {
        const old = before.get(node.id);
        const typeInfo = catalog.types?.get(node.type);
        const run = view.nodes.get(node.id);
        const nodePeers = peersByNode.get(node.id) ?? [];
        const problem = onCycles.has(node.id) ? 'on a cycle' : undefined;
        const sig = JSON.stringify([node, !!typeInfo, !!catalog.types, run, nodePeers, problem]);
        const position = old?.dragging ? old.position : node.position ?? { x: 0, y: 0 };
        const selected = selectedNodes.has(node.id);
        if (old && old.data.sig === sig && old.selected === selected &&
            old.position.x === position.x && old.position.y === position.y) {
          return old;
        }
        return {
          ...(old ?? {}),
          id: node.id,
          type: 'nx' as const,
          position,
          selected,
          data: { node, typeInfo, catalogLoaded: !!catalog.types, run, peers: nodePeers, problem, sig }
        } as NxNode;
      });
    });
  }, [flow, catalog, view, peersByNode, onCycles, selectedNodes]);

  const rfEdges: Edge[] = useMemo(
    () =>
      validEdges.map(e => {
        const target = view.nodes.get(e.target);
        const source = view.nodes.get(e.source);
        const running = target?.state === 'running';
        return {
          id: e.id,
          source: e.source,
          target: e.target,
          sourceHandle: e.source_handle ?? null,
          label: e.label ?? (e.source_handle || undefined),
          selected: selectedEdges.has(e.id),
          animated: running,
          className: `nf-edge${running ? ' nf-edge-running' : ''}${
            source?.state === 'skipped' ? ' nf-edge-skipped' : ''
          }${onCycles.has(e.source) && onCycles.has(e.target) ? ' nf-edge-problem' : ''}`,
          data: { edgeId: e.id }
        };
      }),
    [validEdges, view, selectedEdges, onCycles]
  );

  const onNodesChange = useCallback((changes: NodeChange<NxNode>[]) => {
    setRfNodes(nds => applyNodeChanges(changes.filter(c => c.type !== 'remove'), nds));
    const selects = changes.filter(c => c.type === 'select');
    if (selects.length) {
      setSelectedNodes(prev => {
        const next = new Set(prev);
        for (const c of selects) {
          if (c.type === 'select') {
            c.selected ? next.add(c.id) : next.delete(c.id);
          }
        }
        return next;
      });
    }
  }, []);

  const onEdgesChange = useCallback((changes: EdgeChange[]) => {
    const selects = changes.filter(c => c.type === 'select');
    if (selects.length) {
      setSelectedEdges(prev => {
        const next = new Set(prev);
        for (const c of selects) {
          if (c.type === 'select') {
            c.selected ? next.add(c.id) : next.delete(c.id);
          }
        }
        return next;
      });
    }
  }, []);

  const onNodeDragStop = useCallback(
    (_: unknown, __: NxNode, nodes: NxNode[]) => {
      doc.moveNodes(new Map(nodes.map(n => [n.id, n.position])));
    },
    [doc]
  );

  const onDelete = useCallback(
    ({ nodes, edges }: { nodes: NxNode[]; edges: Edge[] }) => {
      doc.removeElements(nodes.map(n => n.id), edges.map(e => e.id));
      setSelectedNodes(new Set());
      setSelectedEdges(new Set());
    },
    [doc]
  );

  const refusal = useCallback(
    (source: string, target: string): string | null => {
      const cycle = cycleIfConnected(validEdges, source, target);
      if (!cycle) {
        return null;
      }
      return source === target
        ? `Cannot connect ${source} to itself: a flow has no cycles.`
        : `Cannot connect ${source} → ${target}: it would make the cycle ${describeCycle(cycle)}.`;
    },
    [validEdges]
  );

  const onConnect = useCallback(
    (c: Connection) => {
      const reason = refusal(c.source, c.target);
      if (reason) {
        notify(reason);
        return;
      }
      const duplicate = flow.edges.some(
        e => e.source === c.source && e.target === c.target && (e.source_handle ?? null) === (c.sourceHandle ?? null)
      );
      if (duplicate) {
        notify(`${c.source} is already connected to ${c.target}.`, 'info');
        return;
      }
      const id = edgeIdFor(c.source, c.target, c.sourceHandle, new Set(flow.edges.map(e => e.id)));
      const edge: IFlowEdge = { id, source: c.source, target: c.target };
      if (c.sourceHandle) {
        edge.source_handle = c.sourceHandle;
      }
      doc.addElements([], [edge]);
    },
    [doc, flow, refusal, notify]
  );

  const isValidConnection = useCallback(
    (c: Connection | Edge) => refusal(c.source, c.target) === null,
    [refusal]
  );

  const onConnectEnd = useCallback(
    (_: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      if (state.isValid === false && state.fromNode && state.toNode) {
        const reason = refusal(state.fromNode.id, state.toNode.id);
        if (reason) {
          notify(reason);
        }
      }
    },
    [refusal, notify]
  );

  const addNode = useCallback(
    (type: INodeType, position?: { x: number; y: number }) => {
      const taken = new Set(flow.nodes.map(n => n.id));
      let pos = position;
      if (!pos) {
        const box = wrapper.current?.getBoundingClientRect();
        pos = rf.screenToFlowPosition({
          x: (box?.left ?? 0) + (box?.width ?? 400) / 2,
          y: (box?.top ?? 0) + (box?.height ?? 300) / 2
        });
        pos = { x: pos.x - 90 + 30 * (taken.size % 5), y: pos.y - 28 + 30 * (taken.size % 5) };
      }
      const snap = settings.snapToGrid ? settings.gridSize : 1;
      const node: IFlowNode = {
        id: freshId(type.type, taken),
        type: type.type,
        position: { x: Math.round(pos.x / snap) * snap, y: Math.round(pos.y / snap) * snap },
        config: defaultsOf(type.config_schema)
      };
      doc.addElements([node]);
      setSelectedNodes(new Set([node.id]));
    },
    [doc, flow, rf, settings]
  );

  const onDrop = useCallback(
    (event: React.DragEvent) => {
      const name = event.dataTransfer.getData(DND_TYPE);
      const type = catalog.types?.get(name);
      if (!type) {
        return;
      }
      event.preventDefault();
      const p = rf.screenToFlowPosition({ x: event.clientX, y: event.clientY });
      addNode(type, { x: p.x - 90, y: p.y - 20 });
    },
    [catalog, rf, addNode]
  );

  const autoLayout = useCallback(() => {
    const sizes = new Map(rf.getNodes().map(n => [n.id, n.measured]));
    const positions = layoutPositions(
      flow.nodes.map(n => ({ id: n.id, width: sizes.get(n.id)?.width, height: sizes.get(n.id)?.height })),
      validEdges
    );
    doc.moveNodes(positions);
    window.setTimeout(() => rf.fitView({ duration: 300 }), 50);
  }, [doc, flow, validEdges, rf]);

  const copy = useCallback(() => {
    const ids = selectedNodes;
    if (!ids.size) {
      return false;
    }
    clipboard = {
      nodes: flow.nodes.filter(n => ids.has(n.id)),
      edges: flow.edges.filter(e => ids.has(e.source) && ids.has(e.target))
    };
    notify(`Copied ${clipboard.nodes.length} node(s).`, 'info');
    return true;
  }, [flow, selectedNodes, notify]);

  const paste = useCallback(() => {
    if (!clipboard) {
      return;
    }
    const taken = new Set(flow.nodes.map(n => n.id));
    const rename = new Map<string, string>();
    const nodes = clipboard.nodes.map(n => {
      const id = freshId(n.id.replace(/_\d+$/, ''), taken);
      taken.add(id);
      rename.set(n.id, id);
      const p = n.position ?? { x: 0, y: 0 };
      return { ...n, id, position: { x: p.x + 40, y: p.y + 40 } };
    });
    const edgeIds = new Set(flow.edges.map(e => e.id));
    const edges = clipboard.edges.map(e => {
      const source = rename.get(e.source)!;
      const target = rename.get(e.target)!;
      const id = edgeIdFor(source, target, e.source_handle, edgeIds);
      edgeIds.add(id);
      return { ...e, id, source, target };
    });
    doc.addElements(nodes, edges);
    setSelectedNodes(new Set(nodes.map(n => n.id)));
  }, [doc, flow]);

  const onKeyDown = useCallback(
    (e: React.KeyboardEvent) => {
      const target = e.target as HTMLElement;
      if (['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable) {
        return;
      }
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      if (mod && key === 'z' && !e.shiftKey) {
        doc.undo();
      } else if (mod && (key === 'y' || (key === 'z' && e.shiftKey))) {
        doc.redo();
      } else if (mod && key === 'c') {
        if (!copy()) {
          return;
        }
      } else if (mod && key === 'v') {
        paste();
      } else if (mod && key === 'a') {
        setSelectedNodes(new Set(flow.nodes.map(n => n.id)));
      } else {
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    },
    [doc, copy, paste, flow]
  );

  // Fit the view to the content the file opened with (never later, when nodes get added).
  const fitted = useRef(doc.nodes.size === 0);
  useEffect(() => {
    if (!fitted.current && rfNodes.length) {
      fitted.current = true;
      window.setTimeout(() => rf.fitView({ maxZoom: 1.2 }), 30);
    }
  }, [rfNodes, rf]);

  if (invalid) {
    return (
      <div className="nf-invalid-doc" role="alert" data-invalid-doc>
        <h3>This file is not a valid Nexus-Flow flow</h3>
        <p className="nf-field-error">{invalid.error}</p>
        <p>Fix it in a text editor; the canvas reloads when the file is valid again.</p>
        <button className="nf-btn nf-primary" onClick={openAsText}>
          Open in the text editor
        </button>
        <pre className="nf-source">{invalid.source.slice(0, 4000)}</pre>
      </div>
    );
  }

  const single = selectedNodes.size === 1 ? flow.nodes.find(n => selectedNodes.has(n.id)) : undefined;
  const runOf = (id: string): INodeRun | undefined => view.nodes.get(id);
  const others = peers.length;
  return (
    <div
      className="nf-editor"
      data-nexusflow-editor
      data-run-id={view.runId ?? ''}
      data-event-lag-ms={view.lastLagMs ?? ''}
    >
      <div className="nf-toolbar">
        <RunToolbar doc={doc} path={path()} flow={flow} view={view} pick={pickRun} notify={notify} />
        <span className="nf-spacer" />
        <button className="nf-btn" data-action="undo" title="Undo your last change (Ctrl+Z)" onClick={() => doc.undo()}>
          ↶
        </button>
        <button className="nf-btn" data-action="redo" title="Redo (Ctrl+Shift+Z)" onClick={() => doc.redo()}>
          ↷
        </button>
        <button className="nf-btn" data-action="layout" title="Arrange the nodes top-down" onClick={autoLayout}>
          Auto-layout
        </button>
        <div className="nf-presence" data-presence-count={others} title={`${others} other(s) here`}>
          {peers.map(p => (
            <span
              key={p.clientId}
              className="nf-avatar"
              style={{ background: p.user.color ?? '#888' }}
              title={`${p.user.display_name || p.user.name || 'someone'}${
                p.selected.length ? ` — selected ${p.selected.join(', ')}` : ''
              }`}
            >
              {p.user.initials || (p.user.name ?? '?').slice(0, 1)}
            </span>
          ))}
        </div>
      </div>
      {catalog.error && (
        <div className="nf-banner nf-banner-error" role="status">
          Server not reachable — edits keep working and are saved; node types and runs are unavailable.
        </div>
      )}
      {problems.length > 0 && (
        <div className="nf-banner nf-banner-warn" role="status" data-problems>
          {problems.slice(0, 5).map(p => (
            <div key={p}>⚠ {p}</div>
          ))}
          {problems.length > 5 && <div>… and {problems.length - 5} more</div>}
        </div>
      )}
      {notice && (
        <div className={`nf-notice nf-notice-${notice.kind}`} role="alert" data-notice>
          {notice.message}
          <button className="nf-link" onClick={() => setNotice(null)} aria-label="Dismiss">
            ✕
          </button>
        </div>
      )}
      <div className="nf-body">
        <Palette catalog={catalog} reload={reloadCatalog} onAdd={t => addNode(t)} />
        <div
          className="nf-canvas"
          ref={wrapper}
          tabIndex={0}
          onKeyDown={onKeyDown}
          onDragOver={e => {
            if (e.dataTransfer.types.includes(DND_TYPE)) {
              e.preventDefault();
              e.dataTransfer.dropEffect = 'move';
            }
          }}
          onDrop={onDrop}
        >
          <ReactFlow<NxNode, Edge>
            nodes={rfNodes}
            edges={rfEdges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onNodeDragStop={onNodeDragStop}
            onDelete={onDelete}
            onConnect={onConnect}
            onConnectEnd={onConnectEnd}
            isValidConnection={isValidConnection}
            onNodeClick={(_, n) => view.runId && setLogsFor(n.id)}
            onPaneClick={() => setLogsFor(null)}
            deleteKeyCode={['Backspace', 'Delete']}
            snapToGrid={settings.snapToGrid}
            snapGrid={[settings.gridSize, settings.gridSize]}
            minZoom={0.1}
            onlyRenderVisibleElements={rfNodes.length > 200}
            proOptions={{ hideAttribution: true }}
          >
            {settings.showGrid && (
              <Background variant={BackgroundVariant.Dots} gap={settings.gridSize} size={1} />
            )}
            {settings.showMinimap && (
              <MiniMap
                pannable
                zoomable
                style={{ width: 160, height: 110 }}
                nodeColor={n => MINIMAP_COLORS[phase((n.data as any)?.run)] ?? '#9ca3af'}
              />
            )}
            <Controls />
          </ReactFlow>
          {flow.nodes.length === 0 && (
            <div className="nf-empty">
              Drag a node type from the palette onto the canvas to start.
            </div>
          )}
        </div>
        <div className="nf-side">
          {single ? (
            <Inspector
              doc={doc}
              node={single}
              typeInfo={catalog.types?.get(single.type)}
              catalogError={catalog.error}
              secrets={secrets}
              run={runOf(single.id)}
              onShowLogs={view.runId ? () => setLogsFor(single.id) : undefined}
            />
          ) : selectedNodes.size > 1 ? (
            <div className="nf-inspector">
              <div className="nf-inspector-title">{selectedNodes.size} nodes selected</div>
              <div className="nf-help">Ctrl+C copies them, Delete removes them.</div>
            </div>
          ) : (
            <FlowInspector doc={doc} flow={flow} />
          )}
        </div>
      </div>
      {logsFor && view.runId && (
        <LogsPanel
          runId={view.runId}
          nodeId={logsFor}
          run={runOf(logsFor)}
          onClose={() => setLogsFor(null)}
        />
      )}
    </div>
  );
}

export function FlowEditor(props: IEditorProps): JSX.Element {
  return (
    <ReactFlowProvider>
      <Editor {...props} />
    </ReactFlowProvider>
  );
}
