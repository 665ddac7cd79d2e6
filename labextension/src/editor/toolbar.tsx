/** The toolbar: the run controls, Promote…, Connections, undo / redo, auto-layout, and who else is here. */
import React, { useState } from 'react';
import type { IFlow } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import type { Notify } from './notice.js';
import { ConnectionsPanel } from './connections.js';
import { displayName, IPresence } from './presence.js';
import { PromotePopover } from './promote.js';
import { RunToolbar } from './runbar.js';
import type { IRunView } from './runview.js';

function Presence({ peers }: { peers: IPresence[] }): JSX.Element {
  return (
    <div className="nf-presence" data-presence-count={peers.length} title={`${peers.length} other(s) here`}>
      {peers.map(p => (
        <span
          key={p.clientId}
          className="nf-avatar"
          style={{ background: p.user.color ?? '#888' }}
          title={`${displayName(p.user)}${
            p.selected.length ? ` — selected ${p.selected.join(', ')}` : ''
          }`}
        >
          {p.user.initials || displayName(p.user).slice(0, 1).toUpperCase()}
        </span>
      ))}
    </div>
  );
}

export function Toolbar(props: {
  doc: NxFlowDoc;
  path: string;
  flow: IFlow;
  view: IRunView;
  pick: (runId: string | null) => void;
  pinned: string | null;
  notify: Notify;
  autoLayout: () => void;
  fitAll: () => void;
  peers: IPresence[];
  gridOpen: boolean;
  toggleGrid: () => void;
}): JSX.Element {
  const { doc, autoLayout, fitAll, peers } = props;
  const [promoting, setPromoting] = useState(false);
  const [connections, setConnections] = useState(false);
  return (
    <div className="nf-toolbar">
      <RunToolbar doc={doc} path={props.path} flow={props.flow} view={props.view} pick={props.pick} pinned={props.pinned}
        notify={props.notify} />
      <button
        className={`nf-btn${promoting ? ' nf-active' : ''}`}
        data-action="promote"
        title="Promote a stored version of this flow to an environment (its triggers run it), after a dry run"
        onClick={() => {
          setPromoting(!promoting);
          setConnections(false);
        }}
      >
        Promote…
      </button>
      {promoting && <PromotePopover path={props.path} onClose={() => setPromoting(false)} />}
      <button
        className={`nf-btn${connections ? ' nf-active' : ''}`}
        data-action="connections"
        title="The stored database and HTTP connections: add one, test one (passwords are never shown)"
        onClick={() => {
          setConnections(!connections);
          setPromoting(false);
        }}
      >
        Connections
      </button>
      {connections && <ConnectionsPanel onClose={() => setConnections(false)} />}
      <button
        className={`nf-btn${props.gridOpen ? ' nf-active' : ''}`}
        data-action="history-grid"
        title="The run history as a grid: a column per run, a row per node"
        onClick={props.toggleGrid}
      >
        ▦ History
      </button>
      <span className="nf-spacer" />
      <button className="nf-btn" data-action="undo" title="Undo your last change (Ctrl+Z)" onClick={() => doc.undo()}>
        ↶
      </button>
      <button className="nf-btn" data-action="redo" title="Redo (Ctrl+Shift+Z)" onClick={() => doc.redo()}>
        ↷
      </button>
      <button className="nf-btn" data-action="fit" title="Fit the view to every node" onClick={fitAll}>
        ⤢ Fit
      </button>
      <button className="nf-btn" data-action="layout" title="Arrange the nodes top-down" onClick={autoLayout}>
        Auto-layout
      </button>
      <Presence peers={peers} />
    </div>
  );
}
