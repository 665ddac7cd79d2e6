/**
 * Copy and paste of nodes (with the edges between them) across every canvas of the page.
 * Pasted nodes get fresh ids and land 40 px down and right of the originals.
 */
import { useCallback } from 'react';
import { edgeIdFor, freshId, IFlow, IFlowEdge, IFlowNode } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import type { Notify } from './notice.js';

export interface IClip {
  nodes: IFlowNode[];
  edges: IFlowEdge[];
}

/** What Ctrl+C put aside (shared by every canvas of this page). */
let clipboard: IClip | null = null;

/** Return the selected nodes of `flow` and the edges between them. */
export function copySelection(flow: IFlow, ids: ReadonlySet<string>): IClip {
  return {
    nodes: flow.nodes.filter(n => ids.has(n.id)),
    edges: flow.edges.filter(e => ids.has(e.source) && ids.has(e.target))
  };
}

/** Return copies of `clip` that can be added to `flow`: new node and edge ids, moved by 40 px. */
export function pasteElements(clip: IClip, flow: IFlow): IClip {
  const taken = new Set(flow.nodes.map(n => n.id));
  const rename = new Map<string, string>();
  const nodes = clip.nodes.map(n => {
    const id = freshId(n.id.replace(/_\d+$/, ''), taken);
    taken.add(id);
    rename.set(n.id, id);
    const p = n.position ?? { x: 0, y: 0 };
    return { ...n, id, position: { x: p.x + 40, y: p.y + 40 } };
  });
  const edgeIds = new Set(flow.edges.map(e => e.id));
  const edges = clip.edges.map(e => {
    const source = rename.get(e.source)!;
    const target = rename.get(e.target)!;
    const id = edgeIdFor(source, target, e.source_handle, edgeIds);
    edgeIds.add(id);
    return { ...e, id, source, target };
  });
  return { nodes, edges };
}

export function useClipboard(
  doc: NxFlowDoc,
  flow: IFlow,
  selected: ReadonlySet<string>,
  select: (ids: Iterable<string>) => void,
  notify: Notify
): { copy: () => boolean; paste: () => void } {
  const copy = useCallback(() => {
    if (!selected.size) {
      return false;
    }
    clipboard = copySelection(flow, selected);
    notify(`Copied ${clipboard.nodes.length} node(s).`, 'info');
    return true;
  }, [flow, selected, notify]);
  const paste = useCallback(() => {
    if (!clipboard) {
      return;
    }
    const { nodes, edges } = pasteElements(clipboard, flow);
    doc.addElements(nodes, edges);
    select(nodes.map(n => n.id));
  }, [doc, flow, select]);
  return { copy, paste };
}
