/** The toolbar: the run controls, undo / redo, auto-layout, and who else is here. */
import React from 'react';
import type { IFlow } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import type { Notify } from './notice.js';
import type { IPresence } from './presence.js';
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
          title={`${p.user.display_name || p.user.name || 'someone'}${
            p.selected.length ? ` — selected ${p.selected.join(', ')}` : ''
          }`}
        >
          {p.user.initials || (p.user.name ?? '?').slice(0, 1)}
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
  notify: Notify;
  autoLayout: () => void;
  peers: IPresence[];
}): JSX.Element {
  const { doc, autoLayout, peers } = props;
  return (
    <div className="nf-toolbar">
      <RunToolbar doc={doc} path={props.path} flow={props.flow} view={props.view} pick={props.pick} notify={props.notify} />
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
      <Presence peers={peers} />
    </div>
  );
}
