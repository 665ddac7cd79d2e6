/** The palette: node types grouped by category, dragged onto the canvas or double-clicked. */
import React, { useCallback } from 'react';
import type { IBrokenType, INodeType } from '../api.js';
import { NodeIcon } from '../canvas/icon.js';
import type { IPosition } from '../graph.js';
import type { ICatalog } from './catalog.js';

export const DND_TYPE = 'application/x-nexusflow-node-type';

export function Palette({ catalog, reload, onAdd }: {
  catalog: ICatalog;
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
              data-package={t.package ?? ''}
              title={`${t.description}${
                t.package && t.package !== 'nexusflow' ? `\n${t.package} ${t.version ?? ''}` : ''
              }\n(drag onto the canvas, or double-click to add)`}
              onDragStart={e => {
                e.dataTransfer.setData(DND_TYPE, t.type);
                e.dataTransfer.effectAllowed = 'move';
              }}
              onDoubleClick={() => onAdd(t)}
            >
              <span className="nf-palette-name">
                <NodeIcon icon={t.icon} />
                {t.title}
              </span>
              <span className="nf-help">{t.type}</span>
            </div>
          ))}
        </div>
      ))}
      {catalog.broken.length > 0 && <BrokenTypes broken={catalog.broken} />}
    </div>
  );
}

/** The node packages' types that could not be registered: listed with the reason, never added. */
function BrokenTypes({ broken }: { broken: IBrokenType[] }): JSX.Element {
  return (
    <div className="nf-palette-group nf-palette-broken" data-palette-broken={broken.length}>
      <div className="nf-section">Broken ({broken.length})</div>
      {broken.map(b => (
        <div
          key={`${b.type} ${b.package} ${b.entry_point ?? ''}`}
          className="nf-palette-broken-item"
          data-broken-type={b.type}
          title={`${b.package} ${b.version}${b.entry_point ? ` (${b.entry_point})` : ''}: ${b.reason}`}
        >
          <span className="nf-palette-name">{b.type}</span>
          <span className="nf-help">
            {b.package} {b.version}
          </span>
          <span className="nf-field-error" data-broken-reason>
            {b.reason}
          </span>
        </div>
      ))}
    </div>
  );
}

/** The canvas's side of a palette drag: accept it, and add the node where it was dropped. */
export function usePaletteDrop(
  catalog: ICatalog,
  toFlow: (screen: IPosition) => IPosition,
  addNode: (type: INodeType, position: IPosition) => void
) {
  const onDragOver = useCallback((e: React.DragEvent) => {
    if (e.dataTransfer.types.includes(DND_TYPE)) {
      e.preventDefault();
      e.dataTransfer.dropEffect = 'move';
    }
  }, []);
  const onDrop = useCallback(
    (e: React.DragEvent) => {
      const type = catalog.types?.get(e.dataTransfer.getData(DND_TYPE));
      if (!type) {
        return;
      }
      e.preventDefault();
      const p = toFlow({ x: e.clientX, y: e.clientY });
      addNode(type, { x: p.x - 90, y: p.y - 20 });
    },
    [catalog, toFlow, addNode]
  );
  return { onDragOver, onDrop };
}
