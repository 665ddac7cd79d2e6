/** The side panel: the selected node's inspector, a note for several, or the flow's fields. */
import React from 'react';
import type { INodeRun } from '../canvas/types.js';
import type { IFlow } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import type { ICatalog } from './catalog.js';
import type { OpenPath } from './debug.js';
import { FlowInspector, Inspector } from './inspector.js';
import type { Notify } from './notice.js';

export function SidePanel({
  doc, flow, selected, catalog, secrets, runs, onShowLogs, path, runId, openPath, notify
}: {
  doc: NxFlowDoc;
  flow: IFlow;
  selected: ReadonlySet<string>;
  catalog: ICatalog;
  secrets: string[] | null;
  runs: ReadonlyMap<string, INodeRun>;
  /** Open a node's logs (undefined when no run is shown). */
  onShowLogs?: (nodeId: string) => void;
  path: string;
  runId: string | null;
  openPath?: OpenPath;
  notify: Notify;
}): JSX.Element {
  const single = selected.size === 1 ? flow.nodes.find(n => selected.has(n.id)) : undefined;
  return (
    <div className="nf-side">
      {single ? (
        <Inspector
          doc={doc}
          node={single}
          typeInfo={catalog.types?.get(single.type)}
          catalogError={catalog.error}
          secrets={secrets}
          run={runs.get(single.id)}
          onShowLogs={onShowLogs ? () => onShowLogs(single.id) : undefined}
          path={path}
          runId={runId}
          openPath={openPath}
          notify={notify}
        />
      ) : selected.size > 1 ? (
        <div className="nf-inspector">
          <div className="nf-inspector-title">{selected.size} nodes selected</div>
          <div className="nf-help">Ctrl+C copies them, Delete removes them.</div>
        </div>
      ) : (
        <FlowInspector doc={doc} flow={flow} />
      )}
    </div>
  );
}
