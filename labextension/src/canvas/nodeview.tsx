/**
 * How one flow node looks: title, type, handles and its run glow. The Lab panel and the
 * notebook widget draw this same element (same classes and data attributes).
 */
import React, { memo, useEffect } from 'react';
import { Handle, NodeProps, Position, Node, useUpdateNodeInternals } from '@xyflow/react';
import type { IFlowNode } from '../graph.js';
import { NodeIcon } from './icon.js';
import { NodeRunActions } from './nodeactions.js';
import { phase, publicState } from './phase.js';
import type { IItemCounts, INodeLook, INodeRun, IPeer } from './types.js';

export type NxNodeData = {
  node: IFlowNode;
  typeInfo?: INodeLook;
  /** Whether the node types are known (an unknown type is then flagged). */
  catalogLoaded: boolean;
  run?: INodeRun;
  peers: IPeer[];
  problem?: string;
  /** What the node was drawn from (the editor keeps a node object while this is the same). */
  sig?: string;
};

export type NxNode = Node<NxNodeData, 'nx'>;

/** What a node carries beyond its state: a pinned output (the document's `pin`), a result
 *  served from the cache in the run shown (`cached_from`). */
function NodeBadges({ node, run }: { node: IFlowNode; run?: INodeRun }): JSX.Element | null {
  const pin = node.pin as { from_run?: string; pinned_at?: string } | undefined;
  const cached = run?.state === 'succeeded' ? run.cachedFrom : null;
  if (!pin && !cached) {
    return null;
  }
  return (
    <>
      {pin && (
        <span
          className={`nf-node-flag nf-node-pin${run?.pinned ? ' nf-used' : ''}`}
          data-badge="pin"
          data-pin-used={run?.pinned ? 'true' : 'false'}
          title={
            (run?.pinned ? 'This run used the pinned output instead of running the node. ' : '') +
            'Pinned output' +
            (pin.from_run ? ` from run ${String(pin.from_run).slice(0, 8)}` : '') +
            ': runs started with pins use it instead of running the node.'
          }
        >
          pin
        </span>
      )}
      {cached && (
        <span
          className="nf-node-flag nf-node-cache"
          data-badge="cache"
          data-cached-from={cached.run_id}
          title={`Served from the result cache: node ${cached.node_id} of run ${cached.run_id.slice(0, 8)}; it did not run.`}
        >
          cached
        </span>
      )}
    </>
  );
}

/** A map node's progress: `done/total` items and how many failed. */
function MapBadge({ items }: { items: IItemCounts }): JSX.Element {
  const failed = items.failed ?? 0;
  return (
    <div
      className="nf-node-items"
      data-items-done={items.done}
      data-items-total={items.total}
      data-items-failed={failed}
      title={`${items.done} of ${items.total} items done, ${items.running ?? 0} running, ${failed} failed`}
    >
      <span className="nf-items-count">
        {items.done}/{items.total}
      </span>
      {failed > 0 && <span className="nf-items-failed">{failed} failed</span>}
      <span className="nf-items-bar">
        <span style={{ width: `${items.total ? (100 * items.done) / items.total : 100}%` }} />
      </span>
    </div>
  );
}

function NodeView({ id, data, selected }: NodeProps<NxNode>): JSX.Element {
  const { node, typeInfo, run, peers, problem, catalogLoaded } = data;
  const handles = typeInfo?.output_handles ?? [];
  const updateInternals = useUpdateNodeInternals();
  const handleKey = handles.join(',');
  useEffect(() => {
    // The catalog may arrive after the first render and change the handles: re-measure them
    // so that edges from named handles (a Condition's true/false) attach.
    updateInternals(id);
  }, [id, handleKey, updateInternals]);
  const state = publicState(run);
  const ph = phase(run);
  const unknown = catalogLoaded && !typeInfo;
  const ring = peers.length ? { boxShadow: `0 0 0 3px ${peers[0].color}` } : undefined;
  return (
    <div
      className={`nf-node nf-phase-${ph}${selected ? ' nf-selected' : ''}${
        problem || unknown ? ' nf-problem' : ''
      }`}
      data-node-id={node.id}
      data-state={state}
      data-phase={ph}
      data-attempt={run?.attempt ?? ''}
      style={ring}
      title={problem ?? (unknown ? `unknown node type '${node.type}'` : run?.error || node.description || '')}
    >
      <Handle type="target" position={Position.Top} />
      <div className="nf-node-title">{node.label || node.id}</div>
      <div className="nf-node-sub">
        <span className="nf-node-type">
          <NodeIcon icon={typeInfo?.icon} />
          {typeInfo?.title ?? node.type}
        </span>
        {run && (
          <span className="nf-node-badge">
            {ph === 'retrying' ? `retry ${run.attempt}` : run.state}
          </span>
        )}
        <NodeBadges node={node} run={run} />
      </div>
      {run?.items && <MapBadge items={run.items} />}
      {(problem || unknown) && (
        <div className="nf-node-problem">{problem ?? `unknown type '${node.type}'`}</div>
      )}
      {run?.waiting && (
        <div className="nf-node-waiting" role="status" data-waiting>
          {run.waiting}
        </div>
      )}
      <NodeRunActions node={node} run={run} />
      {peers.length > 0 && (
        <div className="nf-node-peers">
          {peers.map(p => (
            <span key={p.name} style={{ background: p.color }}>
              {p.name}
            </span>
          ))}
        </div>
      )}
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

export const NxNodeView = memo(NodeView);
export const nodeTypes = { nx: NxNodeView };
