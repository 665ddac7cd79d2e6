/**
 * What this page has selected. React Flow reports selection as changes; the selection is
 * kept here (not in React Flow's nodes) so the document can be re-read without losing it.
 */
import { useCallback, useState } from 'react';

export interface ISelectChange {
  type: string;
  id?: string;
  selected?: boolean;
}

/** Return `prev` with the `select` changes applied (`prev` itself when there are none). */
export function applySelectChanges(prev: ReadonlySet<string>, changes: readonly ISelectChange[]): ReadonlySet<string> {
  const selects = changes.filter(c => c.type === 'select' && c.id !== undefined);
  if (!selects.length) {
    return prev;
  }
  const next = new Set(prev);
  for (const c of selects) {
    if (c.selected) {
      next.add(c.id!);
    } else {
      next.delete(c.id!);
    }
  }
  return next;
}

export interface ISelection {
  nodes: ReadonlySet<string>;
  edges: ReadonlySet<string>;
  selectNodes: (ids: Iterable<string>) => void;
  clear: () => void;
  onNodeChanges: (changes: readonly ISelectChange[]) => void;
  onEdgeChanges: (changes: readonly ISelectChange[]) => void;
}

export function useSelection(): ISelection {
  const [nodes, setNodes] = useState<ReadonlySet<string>>(new Set());
  const [edges, setEdges] = useState<ReadonlySet<string>>(new Set());
  const selectNodes = useCallback((ids: Iterable<string>) => setNodes(new Set(ids)), []);
  const clear = useCallback(() => {
    setNodes(new Set());
    setEdges(new Set());
  }, []);
  const onNodeChanges = useCallback(
    (changes: readonly ISelectChange[]) => setNodes(prev => applySelectChanges(prev, changes)),
    []
  );
  const onEdgeChanges = useCallback(
    (changes: readonly ISelectChange[]) => setEdges(prev => applySelectChanges(prev, changes)),
    []
  );
  return { nodes, edges, selectNodes, clear, onNodeChanges, onEdgeChanges };
}
