/**
 * Drill down: a sub-flow's child run, opened from its node, over the canvas. The child flow's
 * graph (the workflow version the run ran) is drawn read-only with the same node view and
 * glow, following the child run's events live; its own sub-flows open the same way (a trail
 * of runs, "Back" goes up one), its waiting approvals can be decided, and a node click shows
 * the node's attempts with "Open in notebook" for that node of the child run (its debug
 * notebook next to the sub-flow's file; a sub-flow without a file says why there is none).
 * When the child failed, "Retry the run" retries the run shown on the canvas, which resumes
 * its failed sub-flow node (the child run again, in place; with "current flow", with the
 * flow and its sub-flow files as they are now, so a fix of the sub-flow runs in that child).
 */
import React, { useEffect, useMemo, useState } from 'react';
import { Background, Controls, ReactFlow, ReactFlowProvider } from '@xyflow/react';
import { api, ApiError, INodeType } from '../api.js';
import { INodeActions, NodeActions } from '../canvas/actions.js';
import { NodeDetails } from '../canvas/details.js';
import { flowEdges } from '../canvas/edges.js';
import { NxNode, nodeTypes } from '../canvas/nodeview.js';
import type { IFlow } from '../graph.js';
import { OpenInNotebook, OpenPath } from './debug.js';
import { CurrentFlowToggle } from './runbar.js';
import { useRunDetails } from './rundetails.js';
import { useFollowedRun } from './runview.js';
import { ChildFlowPath, childFlowPath } from './subflowpath.js';

/** One run of the trail: the child run, and the node of the run above that started it. */
export interface IDrillStep {
  runId: string;
  nodeId: string;
}

interface IChildFlow {
  name: string;
  graph: IFlow;
  /** The child run's `source`: its sub-flow's path as the parent names it, or null. */
  source: string | null;
}

export interface IDrillProps {
  trail: readonly IDrillStep[];
  types: ReadonlyMap<string, INodeType> | null;
  onBack: () => void;
  onOpen: (step: IDrillStep) => void;
  notify: (message: string) => void;
  /** The run shown on the canvas (the top of the trail), its status, and the canvas's flow
   *  file: where the child's sub-flow file is found, and what "Retry the run" retries. */
  topRunId: string;
  topStatus: string | null;
  flowPath: string;
  openPath?: OpenPath;
}

export function DrillView({
  trail,
  types,
  onBack,
  onOpen,
  notify,
  topRunId,
  topStatus,
  flowPath,
  openPath
}: IDrillProps): JSX.Element {
  const step = trail[trail.length - 1];
  const runId = step.runId;
  const [child, setChild] = useState<IChildFlow | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [logsFor, setLogsFor] = useState<string | null>(null);
  const [topSource, setTopSource] = useState<string | null | undefined>(undefined);
  const [retrying, setRetrying] = useState(false);
  const [current, setCurrent] = useState(false);
  useEffect(() => {
    let live = true;
    setChild(null);
    setError(null);
    setLogsFor(null);
    api
      .run(runId, false)
      .then(run => api.workflow(run.workflow_id!, run.version).then(wf => ({ run, wf })))
      .then(({ run, wf }) => {
        if (live) {
          setChild({ name: run.name ?? wf.name, graph: wf.graph as unknown as IFlow, source: run.source ?? null });
        }
      })
      .catch(err => live && setError((err as Error).message));
    return () => {
      live = false;
    };
  }, [runId]);
  useEffect(() => {
    let live = true;
    setTopSource(undefined);
    api
      .run(topRunId, false)
      .then(run => live && setTopSource(run.source ?? null))
      .catch(() => live && setTopSource(null));
    return () => {
      live = false;
    };
  }, [topRunId]);
  const childPath: ChildFlowPath | null = useMemo(
    () => (child && topSource !== undefined ? childFlowPath(flowPath, topSource, child.source) : null),
    [child, topSource, flowPath]
  );
  const view = useFollowedRun(runId);
  const retryTop = async () => {
    setRetrying(true);
    try {
      if (current) {
        // The parent with the flow and its sub-flow files as they are now: a child whose
        // sub-flow was fixed resumes in place with the fixed version.
        await api.retryUpdated(topRunId, flowPath);
      } else {
        await api.retry(topRunId);
      }
    } catch (err) {
      const refused = current && err instanceof ApiError && err.status === 409;
      notify(`Retry ${refused ? 'refused' : 'failed'}: ${(err as Error).message}`);
    } finally {
      setRetrying(false);
    }
  };
  const topFinished = topStatus === 'failed' || topStatus === 'canceled';
  const flowNodes = child?.graph.nodes ?? [];
  const details = useRunDetails(runId, flowNodes, view.nodes);
  const actions: INodeActions = useMemo(
    () => ({
      decide: (nodeId, approved, comment) =>
        api
          .decide(runId, nodeId, approved, comment || undefined)
          .then(() => undefined)
          .catch(err => notify((err as Error).message)),
      drill: nodeId => {
        const childRun = details.get(nodeId)?.childRun;
        if (childRun) {
          onOpen({ runId: childRun, nodeId });
        }
      },
      extra: nodeId => details.get(nodeId)
    }),
    [runId, details, onOpen, notify]
  );
  const nodes: NxNode[] = useMemo(
    () =>
      flowNodes.map(node => ({
        id: node.id,
        type: 'nx' as const,
        position: node.position ?? { x: 0, y: 0 },
        selected: node.id === logsFor,
        draggable: false,
        connectable: false,
        data: {
          node,
          typeInfo: types?.get(node.type),
          catalogLoaded: !!types,
          run: view.nodes.get(node.id),
          peers: []
        }
      })),
    [flowNodes, types, view, logsFor]
  );
  const edges = useMemo(() => {
    const ids = new Set(flowNodes.map(n => n.id));
    const list = (child?.graph.edges ?? []).filter(e => ids.has(e.source) && ids.has(e.target));
    return flowEdges(list, view.nodes);
  }, [child, flowNodes, view]);
  return (
    <div className="nf-drill" data-drill-run={runId} data-drill-status={view.status ?? ''}>
      <div className="nf-drill-head">
        <button className="nf-btn" data-action="drill-back" onClick={onBack}>
          ← Back
        </button>
        <span className="nf-help">
          {trail.map(s => s.nodeId).join(' › ')} ›
        </span>
        <b>{child?.name ?? 'sub-flow'}</b>
        <span className="nf-help">run {runId.slice(0, 8)}</span>
        {view.status && <span className={`nf-pill nf-pill-${view.status}`}>{view.status}</span>}
        {(view.status === 'failed' || view.status === 'canceled') && (
          <button
            className="nf-btn"
            data-action="drill-retry"
            disabled={retrying || !topFinished}
            title={
              topFinished
                ? `Retry run ${topRunId.slice(0, 8)} (the one on the canvas): its failed sub-flow node resumes this child run in place (with the sub-flow version it ran, or with "current flow" the sub-flow file as it is now); its succeeded nodes keep their outputs`
                : `Run ${topRunId.slice(0, 8)} on the canvas is still ${topStatus ?? 'loading'}: retry it once it has ended`
            }
            onClick={() => void retryTop()}
          >
            ↻ Retry the run
          </button>
        )}
        {(view.status === 'failed' || view.status === 'canceled') && (
          <CurrentFlowToggle
            action="drill-retry-current"
            title="Retry with the flow and its sub-flow files as they are now (a fix written into the sub-flow's file runs in this same child run)"
            checked={current}
            onChange={setCurrent}
          />
        )}
        {!logsFor && <span className="nf-help">Click a node for its output and logs.</span>}
      </div>
      {error && <div className="nf-field-error">Cannot open the sub-flow run: {error}</div>}
      <div className="nf-drill-body">
        <NodeActions.Provider value={actions}>
          <ReactFlowProvider key={child ? runId : `${runId}-loading`}>
            <ReactFlow<NxNode>
              nodes={nodes}
              edges={edges}
              nodeTypes={nodeTypes}
              nodesDraggable={false}
              nodesConnectable={false}
              fitView
              fitViewOptions={{ maxZoom: 1, padding: 0.2 }}
              onNodeClick={(_, n) => setLogsFor(n.id)}
              onPaneClick={() => setLogsFor(null)}
              proOptions={{ hideAttribution: true }}
              minZoom={0.1}
            >
              <Background gap={16} />
              <Controls showInteractive={false} />
            </ReactFlow>
          </ReactFlowProvider>
        </NodeActions.Provider>
      </div>
      {logsFor && (
        <NodeDetails
          runId={runId}
          nodeId={logsFor}
          run={view.nodes.get(logsFor)}
          load={api.logs}
          loadItems={api.items}
          onOpenRun={(childRun, label) => onOpen({ runId: childRun, nodeId: label })}
          onClose={() => setLogsFor(null)}
          actions={() =>
            childPath?.path ? (
              <OpenInNotebook runId={runId} nodeId={logsFor} path={childPath.path} openPath={openPath} notify={notify} />
            ) : (
              <>
                <button
                  className="nf-btn"
                  data-action="open-notebook"
                  disabled
                  title={childPath?.reason ?? 'Finding the sub-flow’s file…'}
                >
                  Open in notebook
                </button>
                {childPath?.reason && (
                  <span className="nf-help" data-notebook-unavailable>
                    {childPath.reason}
                  </span>
                )}
              </>
            )
          }
        />
      )}
    </div>
  );
}
