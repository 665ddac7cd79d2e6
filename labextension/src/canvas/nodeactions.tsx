/**
 * The buttons a node of a run shows when its host allows (see `actions.ts`): Approve / Reject
 * (with a comment) on a waiting approval, and "Open run" on a sub-flow that started a child run.
 */
import React, { useContext, useState } from 'react';
import type { IFlowNode } from '../graph.js';
import { NodeActions } from './actions.js';
import type { INodeRun } from './types.js';

function stop(e: React.SyntheticEvent): void {
  e.stopPropagation(); // a click on a button is not a click on the node
}

export function NodeRunActions({ node, run }: { node: IFlowNode; run?: INodeRun }): JSX.Element | null {
  const actions = useContext(NodeActions);
  const [comment, setComment] = useState('');
  const [busy, setBusy] = useState(false);
  if (!actions || !run) {
    return null;
  }
  const extra = actions.extra(node.id);
  if (node.type === 'approval' && run.state === 'waiting' && actions.decide) {
    const decide = (approved: boolean) => {
      setBusy(true);
      actions.decide!(node.id, approved, comment).finally(() => setBusy(false));
    };
    const waiting = extra?.waiting;
    return (
      <div className="nf-node-actions nodrag nopan" data-approval={node.id} onClick={stop} onMouseDown={stop}>
        {waiting?.message && <div className="nf-node-message">{waiting.message}</div>}
        {!!waiting?.approvers?.length && (
          <div className="nf-node-approvers">approvers: {waiting.approvers.join(', ')}</div>
        )}
        <input
          className="nf-input nf-node-comment"
          placeholder="comment (optional)"
          aria-label="Decision comment"
          value={comment}
          onChange={e => setComment(e.target.value)}
          onKeyDown={stop}
        />
        <div className="nf-row">
          <button className="nf-btn nf-btn-approve" data-action="approve" disabled={busy} onClick={() => decide(true)}>
            Approve
          </button>
          <button className="nf-btn nf-btn-reject" data-action="reject" disabled={busy} onClick={() => decide(false)}>
            Reject
          </button>
        </div>
      </div>
    );
  }
  if (node.type === 'subflow' && actions.drill && extra?.childRun) {
    return (
      <div className="nf-node-actions nodrag nopan" onClick={stop} onMouseDown={stop}>
        <button
          className="nf-btn"
          data-action="drill"
          data-child-run={extra.childRun}
          title="Open the sub-flow's run, glowing live"
          onClick={() => actions.drill!(node.id)}
        >
          Open sub-flow run ↘
        </button>
      </div>
    );
  }
  if (run.state === 'waiting' && extra?.waiting?.kind === 'resume') {
    return <div className="nf-node-message">waits for a callback on its resume URL</div>;
  }
  return null;
}
