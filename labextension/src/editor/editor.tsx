/**
 * The Lab editor: the shared canvas (node view, edges, glow, node details) on the shared Yjs
 * document, with the palette, the inspector and the run toolbar around it. Each concern is a
 * hook or a panel of its own file; this component only wires them together.
 */
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  BackgroundVariant,
  Controls,
  Edge,
  EdgeChange,
  MiniMap,
  ReactFlow,
  ReactFlowProvider
} from '@xyflow/react';
import { api } from '../api.js';
import { INodeActions, NodeActions } from '../canvas/actions.js';
import { NodeDetails } from '../canvas/details.js';
import { flowEdges } from '../canvas/edges.js';
import { NxNode, nodeTypes } from '../canvas/nodeview.js';
import { phase, PHASE_COLORS } from '../canvas/phase.js';
import { nodesOnCycles } from '../graph.js';
import { NxFlowModel } from '../model.js';
import { Banners } from './banners.js';
import { useCatalog, useSecretNames } from './catalog.js';
import { useClipboard } from './clipboard.js';
import { useConnect } from './connect.js';
import { OpenInNotebook, OpenPath, PinOutput } from './debug.js';
import { DescribePanel } from './describe.js';
import { DrillView, IDrillStep } from './drill.js';
import { InvalidDoc } from './invalid.js';
import { useKeyboard } from './keyboard.js';
import { useLayout } from './layout.js';
import { useCanvasNodes } from './nodes.js';
import { useNotice } from './notice.js';
import { Palette, usePaletteDrop } from './palette.js';
import { usePresence } from './presence.js';
import { drawableEdges, flowProblems } from './problems.js';
import { useRunDetails, withDetails } from './rundetails.js';
import { RunGrid } from './rungrid.js';
import { useRunView } from './runview.js';
import { useSelection } from './selection.js';
import { ICanvasSettings } from './settings.js';
import { SidePanel } from './sidepanel.js';
import { useDocFlow } from './sync.js';
import { Toolbar } from './toolbar.js';

export interface IEditorProps {
  model: NxFlowModel;
  path: () => string;
  settings: ICanvasSettings;
  openAsText: () => void;
  /** Open a path of the server in Lab (the debug notebook of a node). */
  openPath?: OpenPath;
}

function Editor({ model, path, settings, openAsText, openPath }: IEditorProps): JSX.Element {
  const doc = model.sharedModel;
  const flow = useDocFlow(doc);
  const [catalog, reloadCatalog] = useCatalog();
  const secrets = useSecretNames();
  const [notice, notify, dismiss] = useNotice();
  const selection = useSelection();
  const [view, pickRun, pinnedRun, newestRun] = useRunView(doc, path);
  const [gridOpen, setGridOpen] = useState(false);
  const { peers, byNode } = usePresence(doc, selection.nodes);
  const [logsFor, setLogsFor] = useState<string | null>(null);
  const wrapper = useRef<HTMLDivElement>(null);
  const details = useRunDetails(view.runId, flow.nodes, view.nodes, view.status);
  const runs = useMemo(() => withDetails(view.nodes, details), [view.nodes, details]);
  const [trail, setTrail] = useState<IDrillStep[]>([]);
  useEffect(() => setTrail([]), [view.runId]);
  const openChild = useCallback((step: IDrillStep) => setTrail(t => [...t, step]), []);
  const actions: INodeActions = useMemo(
    () => ({
      decide: (nodeId, approved, comment) =>
        view.runId
          ? api
              .decide(view.runId, nodeId, approved, comment || undefined)
              .then(() => undefined)
              .catch(err => notify((err as Error).message))
          : Promise.resolve(),
      drill: nodeId => {
        const childRun = details.get(nodeId)?.childRun;
        if (childRun) {
          openChild({ runId: childRun, nodeId });
        }
      },
      extra: nodeId => details.get(nodeId)
    }),
    [view.runId, details, notify, openChild]
  );

  const drawable = useMemo(() => drawableEdges(flow), [flow]);
  const onCycles = useMemo(() => nodesOnCycles(flow.nodes.map(n => n.id), drawable), [flow, drawable]);
  const problems = useMemo(() => flowProblems(flow, onCycles, catalog.types), [flow, onCycles, catalog]);
  const [rfNodes, onNodePositions] = useCanvasNodes({
    flow, types: catalog.types, runs, peers: byNode, onCycles, selected: selection.nodes
  });
  const rfEdges = useMemo(
    () => flowEdges(drawable, view.nodes, { selected: selection.edges, onCycles }),
    [drawable, view, selection.edges, onCycles]
  );

  const { onNodeChanges, onEdgeChanges, selectNodes, clear } = selection;
  const onNodesChange = useCallback(
    (changes: Parameters<typeof onNodePositions>[0]) => {
      onNodePositions(changes);
      onNodeChanges(changes);
    },
    [onNodePositions, onNodeChanges]
  );
  const onEdgesChange = useCallback((changes: EdgeChange[]) => onEdgeChanges(changes), [onEdgeChanges]);
  const onNodeDragStop = useCallback(
    (_: unknown, __: NxNode, nodes: NxNode[]) => doc.moveNodes(new Map(nodes.map(n => [n.id, n.position]))),
    [doc]
  );
  const onDelete = useCallback(
    ({ nodes, edges }: { nodes: NxNode[]; edges: Edge[] }) => {
      doc.removeElements(nodes.map(n => n.id), edges.map(e => e.id));
      clear();
    },
    [doc, clear]
  );

  const connect = useConnect(doc, flow, drawable, notify);
  const { autoLayout, addNode, toFlow, fitAll, reveal } = useLayout({
    doc, flow, drawable, settings, wrapper, shown: rfNodes.length, select: selectNodes
  });
  // The details open below the canvas and shrink it: keep their node in view, uncovered.
  const detailsShown = !!(logsFor && view.runId);
  useEffect(() => {
    if (!detailsShown || !logsFor) {
      return;
    }
    const timer = window.setTimeout(() => reveal(logsFor), 60);
    return () => window.clearTimeout(timer);
  }, [detailsShown, logsFor, reveal]);
  const drop = usePaletteDrop(catalog, toFlow, addNode);
  const { copy, paste } = useClipboard(doc, flow, selection.nodes, selectNodes, notify);
  const onKeyDown = useKeyboard({
    undo: () => doc.undo(),
    redo: () => doc.redo(),
    copy,
    paste,
    selectAll: () => selectNodes(flow.nodes.map(n => n.id))
  });

  if (doc.invalid) {
    return <InvalidDoc invalid={doc.invalid} openAsText={openAsText} />;
  }
  return (
    <div
      className="nf-editor"
      data-nexusflow-editor
      data-run-id={view.runId ?? ''}
      data-pinned-run={pinnedRun ?? ''}
      data-event-lag-ms={view.lastLagMs ?? ''}
    >
      <Toolbar
        doc={doc} path={path()} flow={flow} view={view} pick={pickRun} pinned={pinnedRun} notify={notify}
        autoLayout={autoLayout} fitAll={fitAll} peers={peers}
        gridOpen={gridOpen} toggleGrid={() => setGridOpen(o => !o)}
      />
      <Banners serverError={!!catalog.error} problems={problems} notice={notice} dismiss={dismiss} />
      <div className="nf-body">
        <Palette catalog={catalog} reload={reloadCatalog} onAdd={t => addNode(t)} />
        <div className="nf-canvas" ref={wrapper} tabIndex={0} onKeyDown={onKeyDown} {...drop}>
          <NodeActions.Provider value={actions}>
          <ReactFlow<NxNode, Edge>
            nodes={rfNodes}
            edges={rfEdges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onNodeDragStop={onNodeDragStop}
            onDelete={onDelete}
            {...connect}
            onNodeClick={(_, n) => view.runId && setLogsFor(n.id)}
            onPaneClick={() => setLogsFor(null)}
            deleteKeyCode={['Backspace', 'Delete']}
            snapToGrid={settings.snapToGrid}
            snapGrid={[settings.gridSize, settings.gridSize]}
            minZoom={0.1}
            onlyRenderVisibleElements={rfNodes.length > 200}
            proOptions={{ hideAttribution: true }}
          >
            {settings.showGrid && <Background variant={BackgroundVariant.Dots} gap={settings.gridSize} size={1} />}
            <Controls />
          </ReactFlow>
          </NodeActions.Provider>
          {trail.length > 0 && view.runId && (
            <DrillView
              trail={trail}
              types={catalog.types}
              onBack={() => setTrail(t => t.slice(0, -1))}
              onOpen={openChild}
              notify={notify}
              topRunId={view.runId}
              topStatus={view.status ?? null}
              flowPath={path()}
              openPath={openPath}
            />
          )}
          {flow.nodes.length === 0 && (
            <div className="nf-empty">Drag a node type from the palette onto the canvas to start.</div>
          )}
          <DescribePanel doc={doc} shownNodes={flow.nodes.length} types={catalog.types} />
        </div>
        <div className="nf-right">
          <SidePanel
            doc={doc} flow={flow} selected={selection.nodes} catalog={catalog} secrets={secrets}
            runs={runs} onShowLogs={view.runId ? setLogsFor : undefined}
            path={path()} runId={view.runId} openPath={openPath} notify={notify}
          />
          {settings.showMinimap && (
            // Beside the canvas, not over it: it never covers a node (nor moves with the logs).
            <MiniMap
              className="nf-minimap"
              pannable
              zoomable
              style={{ width: 160, height: 110 }}
              nodeColor={n => PHASE_COLORS[phase((n.data as any)?.run)] ?? '#9ca3af'}
            />
          )}
        </div>
      </div>
      {gridOpen && (
        <RunGrid
          path={path}
          flow={flow}
          shownRun={view.runId}
          pulse={`${newestRun}/${view.runId}/${view.status}`}
          onPickRun={runId => pickRun(runId === newestRun ? null : runId)}
          onCell={(runId, nodeId) => {
            pickRun(runId === newestRun ? null : runId);
            setLogsFor(nodeId);
          }}
          onClose={() => setGridOpen(false)}
        />
      )}
      {logsFor && view.runId && (
        <NodeDetails
          runId={view.runId}
          nodeId={logsFor}
          run={view.nodes.get(logsFor)}
          load={api.logs}
          loadItems={api.items}
          onOpenRun={(runId, label) => openChild({ runId, nodeId: label })}
          onClose={() => setLogsFor(null)}
          actions={attempt => (
            <>
              <OpenInNotebook
                runId={view.runId!} nodeId={logsFor} path={path()} openPath={openPath} notify={notify}
              />
              <PinOutput
                doc={doc} node={flow.nodes.find(n => n.id === logsFor)} runId={view.runId!} attempt={attempt}
              />
            </>
          )}
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
