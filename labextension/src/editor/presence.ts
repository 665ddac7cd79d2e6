/** Who else has the file open, what they have selected, and telling them what we select. */
import { useEffect, useMemo, useState } from 'react';
import type { IPeer } from '../canvas/types.js';
import type { NxFlowDoc } from '../model.js';

export interface IAwarenessUser {
  name?: string;
  display_name?: string;
  color?: string;
  initials?: string;
  username?: string;
}

export interface IPresence {
  clientId: number;
  user: IAwarenessUser;
  selected: string[];
}

/** Return the other clients of an awareness state map (ours and empty states left out). */
export function readPresence(states: Map<number, any>, selfId: number): IPresence[] {
  const out: IPresence[] = [];
  states.forEach((state, clientId) => {
    if (clientId === selfId || !state) {
      return;
    }
    out.push({ clientId, user: state.user ?? {}, selected: state.nexusflow?.selected ?? [] });
  });
  return out;
}

export function displayName(user: IAwarenessUser): string {
  return user.display_name || user.name || user.username || 'someone';
}

/** Return, per node id, the collaborators who have that node selected. */
export function peersByNode(peers: IPresence[]): Map<string, IPeer[]> {
  const out = new Map<string, IPeer[]>();
  for (const p of peers) {
    for (const id of p.selected) {
      out.set(id, [...(out.get(id) ?? []), { name: displayName(p.user), color: p.user.color ?? '#888' }]);
    }
  }
  return out;
}

/** Follow the collaborators on `doc`; publish this page's `selected` node ids to them. */
export function usePresence(
  doc: NxFlowDoc,
  selected: ReadonlySet<string>
): { peers: IPresence[]; byNode: Map<string, IPeer[]> } {
  const [peers, setPeers] = useState<IPresence[]>([]);
  useEffect(() => {
    const awareness = doc.awareness;
    const read = () => setPeers(readPresence(awareness.getStates(), awareness.clientID));
    read();
    awareness.on('change', read);
    return () => awareness.off('change', read);
  }, [doc]);
  useEffect(() => {
    doc.awareness.setLocalStateField('nexusflow', { selected: Array.from(selected) });
  }, [doc, selected]);
  const byNode = useMemo(() => peersByNode(peers), [peers]);
  return { peers, byNode };
}
